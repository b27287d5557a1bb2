"""Prometheus configuration and alert rules: promtool's own checks and the
rules' unit tests (deploy/prometheus/tests/), and every metric they name is one
the service exports. promtool is in Debian's prometheus package; the promtool
tests skip cleanly without it."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_tools import (
    DEPLOY,
    exported_metric_names,
    load_yaml,
    require_tool,
    run,
    sankofa_metrics_in,
)

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "rules" / "sankofa.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_tool("promtool", package="prometheus")


def alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for group in load_yaml(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_promtool_checks_the_config(promtool: str) -> None:
    # rule_files are relative to the config: this also finds and checks rules/*.yml.
    result = run([promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules/sankofa.yml" in result.stdout + result.stderr


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", str(PROMETHEUS / "tests" / "sankofa.test.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_every_alert_the_seed_asks_for_is_there_with_its_severity() -> None:
    severity = {name: rule["labels"]["severity"] for name, rule in alerts().items()}
    assert severity["SankofaLatencyP99High"] == "critical"
    assert severity["SankofaErrorRateHigh"] == "critical"
    assert severity["SankofaHostCpuHigh"] == "warning"
    assert severity["SankofaHostMemoryHigh"] == "warning"
    assert severity["SankofaThroughputLow"] == "info"
    assert set(severity.values()) <= {"critical", "warning", "info"}
    for name, rule in alerts().items():
        assert rule["annotations"].get("summary"), name


def test_rules_name_only_metrics_the_service_exports() -> None:
    exprs = [rule["expr"] for group in load_yaml(RULES)["groups"] for rule in group["rules"]]
    used = sankofa_metrics_in(exprs)
    assert used, "no sankofa_* metric found: the check would be vacuous"
    assert used <= exported_metric_names(), used - exported_metric_names()
