"""docker-compose.yml: valid by the Compose specification's own JSON schema, and
whole (every service, volume and mounted file it names exists). Docker does not
run here, so the file is checked, not run."""

from __future__ import annotations

import copy
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from deploy_tools import (
    COMPOSE_FILE,
    DEPLOY,
    PENDING_SETTINGS,
    ROOT,
    check_serve_command,
    find_tool,
    load_yaml,
    run,
    setting_names,
)

INSTANCES = ("sankofa-1", "sankofa-2", "sankofa-3", "sankofa-4")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    # safe_load resolves the anchors and merge keys (<<) the file uses, as Compose does.
    doc: dict[str, Any] = load_yaml(COMPOSE_FILE)
    return doc


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    # The Compose specification's schema, as vendored by check-jsonschema: no network.
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema: dict[str, Any] = json.loads(text)
    return schema


def _errors(doc: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


def test_compose_file_is_valid_by_the_compose_schema(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    assert _errors(compose, compose_schema) == []


def test_the_schema_check_catches_a_misspelt_key(
    compose: dict[str, Any], compose_schema: dict[str, Any]
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["nginx"]["port"] = broken["services"]["nginx"].pop("ports")
    broken["services"]["sankofa-1"]["depends_on"]["redis-cluster-init"]["condition"] = "done"
    errors = _errors(broken, compose_schema)
    assert any("port" in e for e in errors), errors
    assert any("condition" in e for e in errors), errors


def test_the_topology_is_all_there(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in (
        "nginx",
        *INSTANCES,
        "postgres-primary",
        "postgres-replica",
        "redis-1",
        "redis-2",
        "redis-3",
        "redis-cluster-init",
        "prometheus",
        "alertmanager",
        "grafana",
    ):
        assert name in services, name
    for name in INSTANCES:
        command = services[name]["command"]
        check_serve_command(command)
        assert _option(command, "--port") == "8000"
        assert _option(command, "--critical-port") == "8001"


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_service_and_volume_named_exists(compose: dict[str, Any]) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes") or {})
    for name, service in services.items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith(("/", ".")):
                assert source in named_volumes, f"{name} mounts undeclared volume {source}"


def test_every_host_the_config_files_name_is_a_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nginx = (DEPLOY / "nginx" / "nginx.conf").read_text()
    upstreams = set(re.findall(r"^\s*server\s+([a-z0-9-]+):(\d+)", nginx, re.MULTILINE))
    assert {host for host, _ in upstreams} == set(INSTANCES)
    assert {port for _, port in upstreams} == {"8000", "8001"}

    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    targets = [
        target
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    ]
    targets += [
        target
        for am in prometheus["alerting"]["alertmanagers"]
        for static in am["static_configs"]
        for target in static["targets"]
    ]
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host == "localhost" or host in services, f"Prometheus target {target}"
    sankofa_job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "sankofa")
    assert sorted(sankofa_job["static_configs"][0]["targets"]) == [f"{n}:8000" for n in INSTANCES]

    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    for ds in datasources["datasources"]:
        host = re.match(r"https?://([^:/]+)", ds["url"])
        assert host and host.group(1) in services, ds["url"]

    env = services["sankofa-1"]["environment"]
    for key in ("SANKOFA_DATABASE_URL", "SANKOFA_DATABASE_REPLICA_URL", "SANKOFA_REDIS_URL"):
        host = re.search(r"@([a-z0-9-]+):\d+/", env[key])
        assert host and host.group(1) in services, env[key]


def test_every_mounted_file_is_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith("."):
                path = (ROOT / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which is not in the repository"
                assert ROOT in path.parents


def test_certificate_and_secret_folders_are_kept_but_not_their_contents() -> None:
    # Users put tls.crt / tls.key and the alert channels' secrets there (deploy/README.md).
    for folder in ("certs", "secrets"):
        ignore = (DEPLOY / folder / ".gitignore").read_text().split()
        assert ignore == ["*", "!.gitignore"], folder


def test_the_instances_read_only_settings_the_service_has(compose: dict[str, Any]) -> None:
    known = setting_names() | PENDING_SETTINGS
    for name in INSTANCES:
        env = compose["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("SANKOFA_")} - known
        assert not unknown, f"{name}: {unknown} are not settings (src/sankofa/settings.py)"
        assert env["SANKOFA_ENVIRONMENT"] == "production"
        # Required from the user, never defaulted in the file.
        assert env["SANKOFA_HMAC_KEY"].startswith("${SANKOFA_HMAC_KEY:?")
        assert env["SANKOFA_JWT_SECRET"].startswith("${SANKOFA_JWT_SECRET:?")


def test_instances_are_given_time_to_drain(compose: dict[str, Any]) -> None:
    for name in INSTANCES:
        service = compose["services"][name]
        grace_s = float(service["environment"]["SANKOFA_DRAIN_GRACE_S"])
        stop_s = float(service["stop_grace_period"].removesuffix("s"))
        # uvicorn waits the drain grace plus 5 s (cli._serve) before it gives up.
        assert stop_s > grace_s + 5


@pytest.mark.parametrize(
    ("script", "shell"),
    [
        ("postgres/primary-init.sh", "bash"),
        ("postgres/replica-entrypoint.sh", "bash"),
        ("redis/redis-cluster-init.sh", "sh"),
    ],
)
def test_scripts_parse(script: str, shell: str) -> None:
    path = DEPLOY / script
    binary = find_tool(shell)
    if binary is None:
        pytest.skip(f"no {shell}")
    result = run([binary, "-n", str(path)])
    assert result.returncode == 0, result.stderr
    assert Path(path).read_text().startswith("#!/")


def test_the_command_check_catches_an_unknown_flag() -> None:
    with pytest.raises(AssertionError, match="--replica-url"):
        check_serve_command(["sankofa", "serve", "--port", "8000", "--replica-url", "x"])
