"""``sankofa``: one entry point, a subcommand per task.

    sankofa serve     [--host --port --workers]
    sankofa migrate
    sankofa simulate  --out FILE [--customers --terminals --days --start]
    sankofa replay    --input FILE --url URL [...]
    sankofa train     --input FILE [--model lightgbm|logreg] [--out FILE ...]
    sankofa evaluate  --protocol split|prequential --input FILE [--model NAME] [--report FILE]
    sankofa tune      --input FILE [--report FILE]
    sankofa shadow report [--report FILE]
    sankofa features compare --raw FILE --published FILE
    sankofa features rebuild
    sankofa loadtest  run|ceiling ...
    sankofa audit     verify [--decisions --anchor SEQ:HASH] | head
    sankofa privacy   retention [--days N --dry-run]
    sankofa client    create --name N --role R... | delete ID_OR_NAME | list
    sankofa token     --role R... [--ttl S]

Operators script these names and options; they stay stable. Settings come
from ``SANKOFA_*`` variables; options given here override them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

from sankofa import __version__
from sankofa.argtypes import positive_float as _positive_float
from sankofa.argtypes import positive_int as _positive_int


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sankofa", description="Real-time fraud scoring for payments in Brazil."
    )
    p.add_argument("--version", action="version", version=f"sankofa {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve the API. Without SANKOFA_DATABASE_URL / SANKOFA_REDIS_URL, starts an"
        " embedded PostgreSQL and Redis with their data under SANKOFA_DATA_DIR (.sankofa).",
    )
    s.add_argument("--host", help="bind address (default SANKOFA_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default SANKOFA_PORT or 8000)")
    s.add_argument("--workers", type=_positive_int, help="worker processes (default 1)")
    s.add_argument(
        "--critical-port",
        type=int,
        help="also serve this port with a worker of its own, for critical traffic",
    )

    sub.add_parser(
        "migrate",
        help="apply the database migrations",
        description="Apply the versioned SQL migrations that are not applied yet.",
    )

    s = sub.add_parser(
        "simulate",
        help="generate transactions with the handbook's simulator",
        description="Reproduce the Fraud Detection Handbook's simulated transactions"
        " (defaults give the published data set) as gzipped CSV.",
    )
    s.add_argument("--out", required=True, type=Path, help="output .csv.gz file")
    s.add_argument("--customers", type=_positive_int, default=5000)
    s.add_argument("--terminals", type=_positive_int, default=10000)
    s.add_argument("--days", type=_positive_int, default=183)
    s.add_argument("--start", type=_date, default=date(2018, 4, 1), help="first day (YYYY-MM-DD)")
    s.add_argument("--radius", type=_positive_float, default=5.0)

    s = sub.add_parser(
        "replay",
        help="stream a transactions file through a running service",
        description="Send transactions in time order to a running service, post each label once"
        " simulated time passes its time plus the delay, and report throughput, latency and"
        " detection quality.",
    )
    s.add_argument("--input", required=True, type=Path, help="raw transactions .csv.gz")
    s.add_argument("--url", required=True, help="service base URL, e.g. http://127.0.0.1:8000")
    s.add_argument("--from", dest="date_from", type=_date, help="first day to send (YYYY-MM-DD)")
    s.add_argument("--to", dest="date_to", type=_date, help="last day to send (inclusive)")
    s.add_argument(
        "--rate",
        type=_positive_float,
        help="transactions per second (default: as fast as answered)",
    )
    s.add_argument("--concurrency", type=_positive_int, default=8, help="requests in flight")
    s.add_argument(
        "--batch",
        type=_positive_int,
        default=1,
        help="transactions per request (1 = single endpoint)",
    )
    s.add_argument(
        "--priority-mix",
        default="critical=0.05,high=0.15,normal=0.6,low=0.2",
        help="share of requests per priority class",
    )
    s.add_argument("--label-delay-days", type=float, default=7.0)
    s.add_argument("--offset", default="-03:00", help="UTC offset given to the naive timestamps")
    s.add_argument("--report", type=Path, help="write the report as JSON here")
    s.add_argument("--id-prefix", default="", help="prefix for transaction ids (to replay twice)")
    s.add_argument("--seed", type=int, default=0, help="seed of the priority draw")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    from sankofa.auth.client_auth import add_client_auth_arguments

    add_client_auth_arguments(s)
    s.add_argument(
        "--protocol",
        choices=("split",),
        help="also compute the handbook protocol's figures from the live scores of exactly"
        " its test set (the replay must cover its training week to its last test day)",
    )

    s = sub.add_parser(
        "features",
        help="online feature tools",
        description="Tools for the online features kept in Redis.",
    )
    fsub = s.add_subparsers(dest="features_command", required=True, metavar="ACTION")
    c = fsub.add_parser(
        "compare",
        help="compare stored online features with published ones",
        description="After a replay of the handbook's data: compare the feature vectors stored"
        " with each decision (SANKOFA_DATABASE_URL) with handbook-features.csv.gz.",
    )
    c.add_argument("--raw", required=True, type=Path, help="handbook-raw.csv.gz that was replayed")
    c.add_argument("--published", required=True, type=Path, help="handbook-features.csv.gz")
    c.add_argument("--id-prefix", default="", help="the replay's --id-prefix")
    c.add_argument("--report", type=Path, help="write the comparison as JSON here")
    r = fsub.add_parser(
        "rebuild",
        help="rebuild the online features in Redis from PostgreSQL",
        description="Put back in Redis every customer and terminal history a window can still"
        " reach, from the transactions and labels in PostgreSQL (SANKOFA_DATABASE_URL,"
        " SANKOFA_REDIS_URL, SANKOFA_REDIS_PREFIX), after Redis lost them. Safe beside live"
        " traffic and safe to run twice: nothing is counted twice.",
    )
    r.add_argument("--batch", type=_positive_int, default=1000, help="transactions per Redis call")

    s = sub.add_parser(
        "train",
        help="train a model and save its artefact",
        description="Train on a window of a transactions file with the project's own feature code"
        " and save a versioned model artefact (JSON). lightgbm needs the 'train' extra.",
    )
    s.add_argument("--input", required=True, type=Path, help="raw transactions .csv.gz")
    s.add_argument("--model", choices=("lightgbm", "logreg"), default="lightgbm")
    s.add_argument("--out", type=Path, default=Path("model.json"), help="artefact to write")
    s.add_argument("--train-start", type=_date, default=date(2018, 7, 25))
    s.add_argument("--train-days", type=_positive_int, default=7)
    s.add_argument("--name", help="model name (default gbdt-handbook / logreg-handbook)")
    s.add_argument("--version", dest="model_version", default="1")
    s.add_argument(
        "--booster-out",
        type=Path,
        help="lightgbm: also save LightGBM's own model text here (for equality tests)",
    )

    s = sub.add_parser(
        "tune",
        help="choose the tree model's hyperparameters on the validation folds",
        description="Grid search of the LightGBM parameters on the handbook's prequential"
        " validation folds (never the test folds). Needs the 'train' extra.",
    )
    s.add_argument("--input", required=True, type=Path, help="raw transactions .csv.gz")
    s.add_argument("--report", type=Path, help="write every grid point's figures as JSON here")

    s = sub.add_parser(
        "shadow",
        help="champion and challenger",
        description="Compare the stored decisions of the champion with a shadow model's.",
    )
    shsub = s.add_subparsers(dest="shadow_command", required=True, metavar="ACTION")
    c = shsub.add_parser(
        "report",
        help="how the shadow model would have decided (SANKOFA_DATABASE_REPLICA_URL when set,"
        " else SANKOFA_DATABASE_URL)",
        description="Agreement matrix of the champion's and the shadow model's decisions, the"
        " decisions that would change, and AUC ROC / AP of both scores where labels exist.",
    )
    c.add_argument("--since", type=_date, help="only transactions from this day (event time)")
    c.add_argument("--report", type=Path, help="write the report as JSON here")

    from sankofa.load.cli import add_loadtest_parser

    add_loadtest_parser(sub)

    from sankofa.privacy.cli import add_privacy_parser
    from sankofa.store.audit import add_audit_parser

    add_audit_parser(sub)
    add_privacy_parser(sub)
    from sankofa.auth.cli import add_auth_parsers

    add_auth_parsers(sub)

    s = sub.add_parser(
        "evaluate",
        help="evaluate on the handbook's protocol",
        description="Train and evaluate a model on the handbook's protocol, printing AUC ROC,"
        " Average Precision, Card Precision@100 and the Brier score beside the published"
        " figures.",
    )
    s.add_argument("--protocol", choices=("split", "prequential"), default="split")
    s.add_argument("--input", required=True, type=Path, help="raw transactions .csv.gz")
    s.add_argument(
        "--model",
        default="lightgbm",
        help="lightgbm (needs the 'train' extra), logreg, or a model artefact to evaluate as is",
    )
    s.add_argument("--report", type=Path, help="write the figures as JSON here")
    s.add_argument("--plots", type=Path, help="write precision-recall and calibration PNGs here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Text for a terminal; ``serve`` switches to SANKOFA_LOG_FORMAT (JSON by default).
    logging.basicConfig(
        level=os.environ.get("SANKOFA_LOG_LEVEL", "info").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # A line per HTTP request would drown the progress bar (and cost CPU) in replays.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "serve":
        return _serve(args)
    if args.command == "migrate":
        return _migrate()
    if args.command == "simulate":
        from sankofa.sim.cli import run_simulate

        return run_simulate(args)
    if args.command == "replay":
        from sankofa.sim.replay import run_replay

        return run_replay(args)
    if args.command == "loadtest":
        from sankofa.load.cli import run_loadtest

        return run_loadtest(args)
    if args.command == "features" and args.features_command == "rebuild":
        from sankofa.engine.rebuild import run_rebuild

        return run_rebuild(args)
    if args.command == "features":
        from sankofa.sim.compare import run_compare

        return run_compare(args)
    if args.command == "train":
        from sankofa.evaluation.train import main_train

        args.version = args.model_version
        return main_train(args) or 0
    if args.command == "evaluate":
        from sankofa.evaluation.train import main_evaluate

        return main_evaluate(args) or 0
    if args.command == "tune":
        from sankofa.evaluation.tune import main_tune

        return main_tune(args)
    if args.command == "audit":
        from sankofa.store.audit import run_audit

        return run_audit(args)
    if args.command == "privacy":
        from sankofa.privacy.cli import run_privacy

        return run_privacy(args)
    if args.command == "shadow":
        from sankofa.store.shadow import run_shadow_report

        return run_shadow_report(args)
    if args.command == "client":
        from sankofa.auth.cli import run_client

        return run_client(args)
    if args.command == "token":
        from sankofa.auth.cli import run_token

        return run_token(args)
    raise AssertionError(args.command)


def _serve(args: argparse.Namespace) -> int:
    from sankofa.embedded import EmbeddedUnavailableError, embedded_servers
    from sankofa.logs import configure_logging, uvicorn_log_config
    from sankofa.settings import Settings
    from sankofa.tls import serve, uvicorn_tls_options

    settings = Settings(
        **{
            k: v
            for k, v in {
                "host": args.host,
                "port": args.port,
                "workers": args.workers,
                "critical_port": args.critical_port,
            }.items()
            if v is not None
        }
    )
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        with contextlib.ExitStack() as stack:
            urls = stack.enter_context(
                embedded_servers(
                    settings.data_dir,
                    need_database=settings.database_url is None,
                    need_redis=settings.redis_url is None,
                )
            )
            # Workers are separate processes that read their settings from the
            # environment: hand them the embedded servers' URLs that way.
            if urls.database_url:
                os.environ["SANKOFA_DATABASE_URL"] = urls.database_url
            if urls.redis_url:
                os.environ["SANKOFA_REDIS_URL"] = urls.redis_url
            if settings.workers > 1 or settings.critical_port is not None:
                # Each worker keeps its metrics in files here; /metrics sums them.
                metrics_dir = tempfile.mkdtemp(prefix="sankofa-metrics-")
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
                stack.callback(shutil.rmtree, metrics_dir, ignore_errors=True)
            grace = int(settings.drain_grace_s) + 5
            if settings.workers > 1 or settings.critical_port is not None:
                from sankofa.supervisor import Supervisor, WorkerConfig

                lane = None
                niceness = 0
                if settings.critical_port is not None:
                    lane = WorkerConfig(
                        settings.host,
                        settings.critical_port,
                        settings.log_level,
                        grace,
                        log_format=settings.log_format,
                        tls_certfile=settings.tls_certfile,
                        tls_keyfile=settings.tls_keyfile,
                    )
                    niceness = settings.bulk_niceness
                config = WorkerConfig(
                    settings.host,
                    settings.port,
                    settings.log_level,
                    grace,
                    niceness,
                    log_format=settings.log_format,
                    tls_certfile=settings.tls_certfile,
                    tls_keyfile=settings.tls_keyfile,
                )
                return Supervisor(config, settings.workers, lane).run()
            # uvicorn shuts down gracefully on SIGTERM / SIGINT, then raises the
            # signal again with the handlers it found at start. Exiting through
            # SystemExit here lets the embedded servers stop cleanly.
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, _exit_on_signal)
            return serve(
                "sankofa.api.asgi:make_app",
                factory=True,
                host=settings.host,
                port=settings.port,
                log_level=settings.log_level,
                access_log=False,
                timeout_graceful_shutdown=grace,
                **uvicorn_log_config(settings.log_format),
                **uvicorn_tls_options(settings.tls_certfile, settings.tls_keyfile),
            )
    except EmbeddedUnavailableError as exc:
        print(f"sankofa serve: {exc}", file=sys.stderr)
        return 2


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _migrate() -> int:
    from sankofa.embedded import EmbeddedUnavailableError, embedded_servers
    from sankofa.settings import Settings
    from sankofa.store.db import create_pool, migrate

    settings = Settings()

    async def run(url: str) -> list[int]:
        pool = await create_pool(url, min_size=1, max_size=1, timeout_s=settings.db_timeout_s)
        try:
            async with pool.acquire() as conn:
                applied: list[int] = await migrate(conn)
                return applied
        finally:
            await pool.close()

    try:
        with embedded_servers(
            settings.data_dir, need_database=settings.database_url is None, need_redis=False
        ) as urls:
            url = settings.database_url or urls.database_url
            assert url is not None
            applied = asyncio.run(run(url))
    except EmbeddedUnavailableError as exc:
        print(f"sankofa migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied migrations: {applied or 'none (up to date)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
