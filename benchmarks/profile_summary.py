"""Sum py-spy's collapsed stacks (``--format raw``) by component of the service.

    python benchmarks/profile_summary.py [--png FILE] worker-*.collapsed

Each sample is charged to the component of the deepest frame that belongs to
one (the model, the Redis client, asyncpg, ...), so time spent inside a
library called from our code counts for that library's component, and time in
our own code counts for the part of the service it is in. The event loop
(asyncio, uvloop) gets only the samples with no other component on the stack:
uvloop's own C code (sockets, timers, callbacks) shows as the loop's run call. Prints a markdown
table: component, share of the sampled busy time, and the top functions.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter, defaultdict
from pathlib import Path

#: (component, pattern on a frame's file path), most specific first.
COMPONENTS: list[tuple[str, str]] = [
    (
        "model (numpy trees, contributions)",
        r"sankofa/engine/(trees|tree_eval|model|derived_features)\.py",
    ),
    ("features: Redis client and script", r"(^|/)redis/|sankofa/engine/features_online\.py"),
    ("database: asyncpg, COPY, commit", r"(^|/)asyncpg/|sankofa/store/"),
    ("metrics (prometheus-client)", r"(^|/)prometheus_client/|sankofa/metrics\.py"),
    (
        "request parsing and validation (orjson, pydantic)",
        r"(^|/)pydantic|orjson|sankofa/api/(body|schemas|headers)\.py",
    ),
    (
        "decision, response building",
        r"sankofa/engine/(decision|scorer|serving)\.py|sankofa/api/problems\.py",
    ),
    ("dispatcher (queues, batching)", r"sankofa/queues/"),
    ("our routes and middleware", r"sankofa/api/"),
    (
        "HTTP server and framework (uvicorn, starlette, fastapi)",
        r"(^|/)(uvicorn|starlette|fastapi|h11)/|httptools",
    ),
    ("event loop (asyncio, uvloop: sockets, timers, callbacks)", r"(^|/)asyncio/|uvloop"),
]
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::\d+)?\)$")


def component_of(frames: list[str]) -> str:
    """The component of the deepest frame that has one; the event loop only when
    nothing else on the stack does (the Redis client's writes run in asyncio's
    streams, and belong to the Redis client)."""
    loop_name = COMPONENTS[-1][0]
    if frames and "asyncio/runners.py" in frames[-1]:
        return loop_name  # inside uvloop's run: its C code, under every other frame
    in_loop = False
    for frame in reversed(frames):
        m = _FRAME.match(frame)
        path = m.group("file") if m else frame
        for name, pattern in COMPONENTS[:-1]:
            if re.search(pattern, path):
                return name
        in_loop = in_loop or bool(re.search(COMPONENTS[-1][1], path))
    return loop_name if in_loop else "other (interpreter, GC, unattributed)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path)
    ap.add_argument("--png", type=Path)
    args = ap.parse_args()
    totals: Counter[str] = Counter()
    leaves: dict[str, Counter[str]] = defaultdict(Counter)
    for path in args.files:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = [f for f in stack.split(";") if f]
            # py-spy's first frame is the process/thread label.
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            comp = component_of(frames)
            n = int(count)
            totals[comp] += n
            leaf = frames[-1] if frames else "?"
            m = _FRAME.match(leaf)
            leaves[comp][
                m.group("func") + " (" + Path(m.group("file")).name + ")" if m else leaf
            ] += n
    all_n = sum(totals.values())
    if not all_n:
        print("no samples")
        return 1
    print(f"{all_n:,} samples of busy time (py-spy, idle excluded), {len(args.files)} worker(s)\n")
    print("| component | share | top functions (share of all samples) |")
    print("|---|---:|---|")
    for comp, n in totals.most_common():
        top = ", ".join(f"`{f}` {c / all_n:.1%}" for f, c in leaves[comp].most_common(3))
        print(f"| {comp} | {n / all_n:.1%} | {top} |")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        items = totals.most_common()[::-1]
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(items) + 1.2))
        ax.barh([c for c, _ in items], [100 * n / all_n for _, n in items], color="#4477aa")
        ax.set_xlabel("share of sampled busy time in the service workers (%)")
        ax.set_title("Where a worker's time goes under load (py-spy)")
        fig.tight_layout()
        fig.savefig(args.png, dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
