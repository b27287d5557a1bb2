"""``sankofa loadtest``: the load generator's command line.

    sankofa loadtest run --url URL --rate R --duration S [options]
    sankofa loadtest ceiling [--connections N --processes K --duration S --out DIR]

``add_loadtest_parser`` adds the subcommand to ``sankofa``'s parser and
``run_loadtest`` carries it out; ``python -m sankofa.load.cli`` runs it alone.
Heavy imports (numpy data loading, matplotlib, psutil) happen only inside the
command, never when ``sankofa --help`` builds its parser.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sankofa.argtypes import non_negative_float as _non_negative_float
from sankofa.argtypes import non_negative_int
from sankofa.argtypes import positive_float as _positive_float
from sankofa.argtypes import positive_int as _positive_int
from sankofa.load.constants import ARRIVALS, DEFAULT_PRIORITY_MIX

DEFAULT_OUT = Path("loadtest-results")


def _add_scenario(sub: Any) -> None:
    # Imported here, not at module level: the scenarios pull in numpy and the runner.
    from sankofa.load.scenarios import add_scenario_parser

    add_scenario_parser(sub)


def add_loadtest_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``loadtest`` (with ``run`` and ``ceiling``) to a parser's subparsers."""
    lt: argparse.ArgumentParser = subparsers.add_parser(
        "loadtest",
        help="open-model load generator and its own ceiling",
        description="Send transactions from the Fraud Detection Handbook's data to a running"
        " service at a fixed rate (open model: latency counted from each request's intended"
        " send time), and report per-priority latency, throughput, errors and the server's"
        " CPU and memory as JSON, markdown and PNG plots.",
    )
    sub = lt.add_subparsers(dest="loadtest_command", required=True, metavar="ACTION")
    _add_scenario(sub)

    r = sub.add_parser(
        "run",
        help="run one open-model load test",
        description="One open-model load test. It stops by itself: the schedule lasts"
        " --warmup + --duration seconds and every request has a --timeout-s deadline.",
    )
    r.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    r.add_argument("--rate", required=True, type=_positive_float, help="requests per second")
    r.add_argument(
        "--duration", required=True, type=_positive_float, help="measured seconds (after warm-up)"
    )
    r.add_argument("--arrival", choices=ARRIVALS, default="constant", help="arrival process")
    r.add_argument(
        "--connections",
        type=_positive_int,
        help="keep-alive connections in all (default: rate x 50 ms, within 16..512)",
    )
    r.add_argument(
        "--processes", type=_positive_int, default=1, help="generator processes (share the rate)"
    )
    r.add_argument(
        "--priority-mix",
        default=DEFAULT_PRIORITY_MIX,
        help=f"share of requests per class (default {DEFAULT_PRIORITY_MIX})",
    )
    r.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        help="transactions per request; > 1 posts to /v1/transactions/batch",
    )
    r.add_argument(
        "--path",
        help="request path (default /v1/transactions, or /v1/transactions/batch with --batch;"
        " /bench/bare and /bench/naive take the same payloads)",
    )
    r.add_argument(
        "--input",
        type=Path,
        help="handbook raw transactions .csv.gz (default ../shared/data/handbook-raw.csv.gz,"
        " else the committed test slice)",
    )
    r.add_argument("--start-row", type=int, default=0, help="first data row to send (default 0)")
    r.add_argument(
        "--pix-every",
        type=non_negative_int,
        default=0,
        help="send every k-th transaction (by id) as a PIX; 0 (default): all card payments",
    )
    r.add_argument(
        "--server-pid",
        type=_positive_int,
        action="append",
        default=[],
        help="sample CPU and RSS of this process and its children (repeatable)",
    )
    r.add_argument(
        "--sample-process-name",
        action="append",
        default=[],
        metavar="NAME",
        help="sample all processes with this name, e.g. postgres, redis-server (repeatable)",
    )
    r.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    r.add_argument("--label", default="loadtest", help="name of the run (output file names)")
    r.add_argument(
        "--warmup", type=_non_negative_float, default=0.0, help="seconds sent but not measured"
    )
    r.add_argument("--seed", type=int, default=0, help="seed of arrivals and priorities")
    r.add_argument(
        "--timeout-s",
        type=_positive_float,
        default=10.0,
        help="a request not answered this long after its intended time is a timeout",
    )
    r.add_argument("--run-id", help="transaction id prefix (default: random, unique per run)")
    from sankofa.auth.client_auth import add_client_auth_arguments

    add_client_auth_arguments(r)
    r.add_argument("--no-plots", action="store_true", help="JSON and markdown only")
    r.add_argument("--quiet", action="store_true", help="no progress lines")

    c = sub.add_parser(
        "ceiling",
        help="the generator's own maximum rate, beside wrk's",
        description="Start a trivial HTTP server (fixed 200 JSON answer) on loopback in its own"
        " process, measure the generator's closed-loop maximum and an open-model rate sweep"
        " against it, run wrk against the same endpoint with the same connections and body"
        " size, compare the client's CPU per request with httpx's, and write JSON + markdown.",
    )
    c.add_argument("--connections", type=_positive_int, default=64)
    c.add_argument("--processes", type=_positive_int, default=1, help="generator processes")
    c.add_argument("--duration", type=_positive_float, default=5.0, help="seconds per step")
    c.add_argument(
        "--sweep",
        default="0.5,0.7,0.8,0.9,1.0,1.1",
        help="open-model rates as fractions of the closed-loop maximum",
    )
    c.add_argument("--input", type=Path, help="data file for the request body (default as for run)")
    c.add_argument("--no-httpx", action="store_true", help="skip the httpx cost comparison")
    c.add_argument("--no-wrk", action="store_true", help="skip wrk")
    c.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    c.add_argument("--label", default="ceiling")
    c.add_argument("--quiet", action="store_true", help="no progress lines")
    return lt


def run_loadtest(args: argparse.Namespace) -> int:
    """Carry out ``sankofa loadtest ...``; returns the process exit code."""
    if args.loadtest_command == "run":
        return _run(args)
    if args.loadtest_command == "scenario":
        from sankofa.load.scenarios import run_scenario

        return run_scenario(args)
    if args.loadtest_command == "ceiling":
        from sankofa.load.ceiling import run_ceiling

        return run_ceiling(args)
    raise AssertionError(args.loadtest_command)


def _run(args: argparse.Namespace) -> int:
    from sankofa.load.errors import LoadTestError, LoadTestSetupError
    from sankofa.load.payloads import default_input
    from sankofa.load.plan import parse_priority_mix
    from sankofa.load.runner import RunSpec, run
    from sankofa.load.sampler import GroupSpec, psutil_available

    try:
        mix = parse_priority_mix(args.priority_mix)
    except ValueError as exc:
        print(f"sankofa loadtest: {exc}", file=sys.stderr)
        return 2
    groups = [GroupSpec(label=f"server pid {p}", pid=p) for p in args.server_pid]
    groups += [GroupSpec(label=n, name=n) for n in args.sample_process_name]
    if groups and not psutil_available():
        print(
            "sankofa loadtest: sampling needs psutil: pip install 'sankofa[load]'",
            file=sys.stderr,
        )
        return 2
    path = args.path or ("/v1/transactions/batch" if args.batch > 1 else "/v1/transactions")
    input_path = args.input or default_input()
    try:
        authorization = _authorization(args)
    except (ValueError, PermissionError, OSError) as exc:
        print(f"sankofa loadtest: {exc}", file=sys.stderr)
        return 2
    try:
        spec = RunSpec(
            url=args.url,
            path=path,
            rate=args.rate,
            duration_s=args.duration,
            warmup_s=args.warmup,
            arrival=args.arrival,
            connections=args.connections,
            processes=args.processes,
            mix=mix,
            batch=args.batch,
            timeout_s=args.timeout_s,
            seed=args.seed,
            run_id=args.run_id or f"lt{secrets.token_hex(4)}",
            label=args.label,
            input_path=input_path,
            start_row=args.start_row,
            pix_every=args.pix_every,
            sample=tuple(groups),
            sample_generator=psutil_available(),
            authorization=authorization,
        )
    except ValueError as exc:
        print(f"sankofa loadtest: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(
            f"loadtest {spec.label}: {spec.rate:g} req/s x {spec.total_s:g} s to"
            f" {spec.url}{spec.path} over {spec.connections_total()} connections,"
            f" {spec.processes} process(es), data {input_path}",
            file=sys.stderr,
        )
    try:
        data = run(spec, progress=None if args.quiet else sys.stderr)
    except KeyboardInterrupt:
        print("sankofa loadtest: interrupted; no report written", file=sys.stderr)
        return 130
    except LoadTestSetupError as exc:
        print(f"sankofa loadtest: {exc}", file=sys.stderr)
        return 2
    except LoadTestError as exc:
        print(f"sankofa loadtest: {exc}", file=sys.stderr)
        return 1
    written = write_outputs(data, args.out, args.label, plots=not args.no_plots)
    print(written["markdown_text"], end="")
    for p in written["files"]:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def _authorization(args: argparse.Namespace) -> str | None:
    """The run's Authorization header: one token for the whole run (requests are
    prebuilt), obtained before it starts; warned about if it expires during it."""
    import httpx

    from sankofa.auth.client_auth import authorization_header, credentials_from

    creds = credentials_from(args)
    try:
        header, ttl_s = authorization_header(args.url, creds)
    except httpx.HTTPError as exc:
        raise OSError(f"token request failed: {exc}") from None
    total_s = args.duration + args.warmup
    if ttl_s is not None and ttl_s < total_s:
        print(
            f"sankofa loadtest: the token lives {ttl_s:g} s, the run {total_s:g} s: requests"
            " after its expiry will be 401",
            file=sys.stderr,
        )
    return header


def write_outputs(data: Any, out_dir: Path, stem: str, *, plots: bool) -> dict[str, Any]:
    """JSON, markdown and (when matplotlib is there) PNG plots of one run."""
    from sankofa.load.plots import matplotlib_available, write_plots
    from sankofa.load.report import markdown, summarise

    report = summarise(data)
    text = markdown(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    if plots and matplotlib_available():
        pngs = write_plots(report, data, out_dir, stem)
        report["plots"] = [p.name for p in pngs]
        files += pngs
    elif plots:
        print("sankofa loadtest: no plots: pip install 'sankofa[load]'", file=sys.stderr)
    files[0].write_text(json.dumps(report, indent=1) + "\n")
    files[1].write_text(text)
    return {"report": report, "markdown_text": text, "files": files}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sankofa")
    add_loadtest_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_loadtest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
