"""The Grafana dashboard and its provisioning: wired to the provisioned data
source, covering what operators watch, and every query valid PromQL (through
promtool, skipped without it) over metrics the service exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy_tools import (
    COMPOSE_FILE,
    DASHBOARD,
    DEPLOY,
    check_promql,
    dashboard_queries,
    exported_metric_names,
    load_yaml,
    require_tool,
    sankofa_metrics_in,
)

GRAFANA = DEPLOY / "grafana"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def test_panels_use_the_provisioned_data_source(dashboard: dict[str, Any]) -> None:
    provisioned = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    uids = {ds["uid"] for ds in provisioned["datasources"]}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels(dashboard):
        assert p["datasource"]["uid"] in uids, p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] in uids


def test_dashboards_are_provisioned_from_where_compose_mounts_them() -> None:
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "sankofa.yml")["providers"][0]
    grafana = load_yaml(COMPOSE_FILE)["services"]["grafana"]
    mounts = dict(m.split(":")[:2] for m in grafana["volumes"])
    assert Path(mounts["./deploy/grafana/dashboards"]) == Path(provider["options"]["path"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"


def test_the_dashboard_shows_what_operators_watch(dashboard: dict[str, Any]) -> None:
    titles = " | ".join(p["title"] for p in panels(dashboard)).lower()
    for topic in (
        "throughput",
        "latency p50 by priority",
        "latency p95 by priority",
        "latency p99 by priority",
        "error rate",
        "errors by status",
        "queue depth",
        "batch size",
        "shed and expired",
        "database pool",
        "redis pool",
        "cpu",
        "memory",
    ):
        assert topic in titles, topic


def test_queries_name_only_metrics_the_service_exports(dashboard: dict[str, Any]) -> None:
    used = sankofa_metrics_in(dashboard_queries().values())
    assert used <= exported_metric_names(), used - exported_metric_names()
    for metric in (
        "sankofa_http_requests_total",
        "sankofa_http_request_duration_seconds_bucket",
        "sankofa_queue_depth",
        "sankofa_queue_wait_seconds_bucket",
        "sankofa_batch_size_bucket",
        "sankofa_batch_duration_seconds_bucket",
        "sankofa_shed_total",
        "sankofa_expired_total",
        "sankofa_decisions_total",
        "sankofa_batches_total",
        "sankofa_redis_round_trips_total",
        "sankofa_db_transactions_total",
        "sankofa_db_pool_connections",
        "sankofa_db_pool_in_use",
        "sankofa_redis_pool_in_use",
    ):
        assert metric in used, metric


def test_queries_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool", package="prometheus")
    check_promql(promtool, dashboard_queries(), tmp_path)
