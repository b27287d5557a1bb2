"""``sankofa simulate``: the handbook's simulator, with a progress bar."""

from __future__ import annotations

import argparse

from sankofa.progress import Progress
from sankofa.sim.simulator import simulate_to_csv


def run_simulate(args: argparse.Namespace) -> int:
    bar = Progress(args.customers, "simulate", unit="customers")
    summary = simulate_to_csv(
        args.out,
        n_customers=args.customers,
        n_terminals=args.terminals,
        nb_days=args.days,
        start_date=args.start,
        radius=args.radius,
        progress=lambda done, total: bar.update(done),
    )
    bar.close()
    sc = summary["scenarios"]
    print(
        f"wrote {args.out}: {summary['rows']:,} transactions, {summary['frauds']:,} frauds"
        f" ({summary['fraud_rate'] * 100:.4f} %; S1 {sc['S1']:,}, S2 {sc['S2']:,}, S3 {sc['S3']:,}),"
        f" {summary['active_customers']:,} active customers,"
        f" mean amount {summary['mean_amount']:.2f}, max {summary['max_amount']:.2f}"
        f" ({bar.elapsed_s:.1f} s)"
    )
    return 0
