"""deploy/k8s: every manifest valid against the Kubernetes API's own schemas
(kubernetes-validate ships them: no cluster, no network), and consistent with
the service and with each other (probes on real routes, a termination period
longer than the drain, selectors that select, the HPA's latency metric defined
by the adapter rule)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy_tools import (
    DEPLOY,
    PENDING_SETTINGS,
    ROOT,
    check_promql,
    check_serve_command,
    exported_metric_names,
    load_yaml,
    load_yaml_all,
    require_tool,
    sankofa_metrics_in,
    setting_names,
)

K8S = DEPLOY / "k8s"
#: The oldest Kubernetes these manifests promise to work on, and the newest
#: kubernetes-validate knows.
VERSIONS = ("1.30", kubernetes_validate.latest_version())


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the object, from every file kustomization.yaml lists."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for name in load_yaml(K8S / "kustomization.yaml")["resources"]:
        for doc in load_yaml_all(K8S / name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load_yaml(K8S / "kustomization.yaml")["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    docs = manifests()
    assert {kind for kind, _ in docs} >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    for (kind, name), doc in docs.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name} for Kubernetes {version}: {exc.message}")


def test_validation_catches_a_misplaced_field() -> None:
    deployment = copy.deepcopy(manifests()[("Deployment", "sankofa")])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["path"] = "/health/ready"  # belongs under httpGet
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSIONS[-1], strict=True)


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return manifests()[("Deployment", "sankofa")]


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: dict[str, Any] = containers[0]
    return c


def test_probes_hit_the_service_health_routes(container: dict[str, Any]) -> None:
    from sankofa.api.routes import router

    paths = {getattr(r, "path", None) for r in router.routes}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths
        assert get["port"] in ports
    command = container["command"]
    check_serve_command(command)
    assert str(ports["http"]) == command[command.index("--port") + 1]
    assert str(ports["critical"]) == command[command.index("--critical-port") + 1]


def test_termination_outlasts_the_drain(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    config = manifests()[("ConfigMap", "sankofa")]["data"]
    drain_s = float(config["SANKOFA_DRAIN_GRACE_S"])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then the drain, then uvicorn's own 5 s more (cli._serve).
    needed = float(pre_stop[1]) + drain_s + 5
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_settings_come_from_the_configmap_and_secret(container: dict[str, Any]) -> None:
    docs = manifests()
    sources = {
        ("ConfigMap" if "configMapRef" in s else "Secret"): (s.get("configMapRef") or s["secretRef"])["name"]
        for s in container["envFrom"]
    }  # fmt: skip
    config = docs[("ConfigMap", sources["ConfigMap"])]["data"]
    secret = docs[("Secret", sources["Secret"])]["stringData"]
    known = setting_names() | PENDING_SETTINGS
    assert set(config) | set(secret) <= known, (set(config) | set(secret)) - known
    assert config["SANKOFA_ENVIRONMENT"] == "production"
    for key in (
        "SANKOFA_HMAC_KEY",
        "SANKOFA_JWT_SECRET",
        "SANKOFA_DATABASE_URL",
        "SANKOFA_REDIS_URL",
    ):
        assert key in secret and key not in config
        assert "REPLACE" in secret[key]  # placeholders only


def test_runs_as_the_image_user_without_privileges(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid and pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])


def test_selectors_select_the_pods(deployment: dict[str, Any]) -> None:
    docs = manifests()
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        docs[("Service", "sankofa")]["spec"]["selector"],
        docs[("PodDisruptionBudget", "sankofa")]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()
    namespaces = {d["metadata"].get("namespace") for (k, _), d in docs.items() if k != "Namespace"}
    assert namespaces == {"sankofa", "monitoring"}


def adapter_rules() -> list[dict[str, Any]]:
    config = manifests()[("ConfigMap", "prometheus-adapter-sankofa")]["data"]["config.yaml"]
    rules: list[dict[str, Any]] = yaml.safe_load(config)["rules"]
    return rules


def test_hpa_scales_on_cpu_and_on_the_adapter_latency_metric() -> None:
    hpa = manifests()[("HorizontalPodAutoscaler", "sankofa")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "sankofa"
    by_type = {m["type"]: m for m in hpa["spec"]["metrics"]}
    cpu = by_type["Resource"]["resource"]
    assert cpu["name"] == "cpu"
    assert cpu["target"]["averageUtilization"] == 70
    latency = by_type["Pods"]["pods"]
    assert latency["target"]["averageValue"] == "200m"  # 200 ms, the alert's threshold
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert latency["metric"]["name"] in served


def test_adapter_queries_are_valid_promql_over_exported_metrics(tmp_path: Path) -> None:
    exprs: dict[str, str] = {}
    for rule in adapter_rules():
        series = re.match(r"[a-z_:]+", rule["seriesQuery"])
        assert series
        # The adapter's template, filled in as it would for one pod.
        exprs[rule["name"]["as"]] = (
            rule["metricsQuery"]
            .replace("<<.Series>>", series.group(0))
            .replace("<<.LabelMatchers>>", 'namespace="sankofa", pod="sankofa-0"')
            .replace("<<.GroupBy>>", "pod")
        )
    used = sankofa_metrics_in(exprs.values())
    assert used and used <= exported_metric_names()
    check_promql(require_tool("promtool", package="prometheus"), exprs, tmp_path)
