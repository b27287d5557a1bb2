"""deploy/alertmanager/alertmanager.yml: `amtool check-config`, and each
severity routed where it should go (critical to email, Slack and SMS). amtool
is in Debian's prometheus-alertmanager package; skipped cleanly without it."""

from __future__ import annotations

import pytest

from deploy_tools import DEPLOY, load_yaml, require_tool, run

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"


@pytest.fixture(scope="module")
def amtool() -> str:
    return require_tool("amtool", package="prometheus-alertmanager")


def test_amtool_checks_the_config(amtool: str) -> None:
    result = run([amtool, "check-config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("severity", "receiver"),
    [
        ("critical", "oncall-critical"),
        ("warning", "slack-warnings"),
        ("info", "team-email"),
        ("none", "team-email"),
    ],
)
def test_each_severity_reaches_its_receiver(amtool: str, severity: str, receiver: str) -> None:
    result = run(
        [
            amtool, "config", "routes", "test", f"--config.file={CONFIG}",
            f"severity={severity}", "alertname=SankofaErrorRateHigh", "job=sankofa",
        ]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [receiver]


def test_critical_goes_to_email_slack_and_sms() -> None:
    receivers = {r["name"]: r for r in load_yaml(CONFIG)["receivers"]}
    oncall = receivers["oncall-critical"]
    assert oncall["email_configs"]
    assert oncall["slack_configs"]
    assert oncall["webhook_configs"]  # the SMS bridge


def test_secrets_are_read_from_files_not_written_here() -> None:
    config = load_yaml(CONFIG)
    text = CONFIG.read_text()
    assert "smtp_auth_password:" not in text
    assert config["global"]["smtp_auth_password_file"].startswith("/etc/alertmanager/secrets/")
    assert config["global"]["slack_api_url_file"].startswith("/etc/alertmanager/secrets/")
    for receiver in config["receivers"]:
        for slack in receiver.get("slack_configs", []):
            assert "api_url" not in slack
