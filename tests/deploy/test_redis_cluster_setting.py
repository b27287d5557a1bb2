"""Every deployment speaks Redis Cluster the same way: the Compose instances, the
Kubernetes ConfigMap and the native cluster script set SANKOFA_REDIS_CLUSTER,
which the service reads, and their Redis is a cluster of as many masters as the
service's default slot groups (one script call per master per batch)."""

from __future__ import annotations

from typing import Any

import pytest

from deploy_tools import COMPOSE_FILE, DEPLOY, PENDING_SETTINGS, load_local_cluster, load_yaml
from sankofa.settings import Settings

K8S = DEPLOY / "k8s"


def test_the_setting_is_the_service_s() -> None:
    assert "SANKOFA_REDIS_CLUSTER" not in PENDING_SETTINGS
    node = "redis://127.0.0.1:7000/0"
    assert Settings(redis_cluster="true", redis_url=node).redis_cluster is True  # type: ignore[arg-type]
    assert Settings().redis_cluster is False
    with pytest.raises(ValueError, match="SANKOFA_REDIS_URL"):
        Settings(redis_cluster=True)  # the embedded Redis is no cluster


def test_compose_instances_use_the_three_node_cluster() -> None:
    compose: dict[str, Any] = load_yaml(COMPOSE_FILE)
    services = compose["services"]
    nodes = [n for n in services if n.startswith("redis-") and n != "redis-cluster-init"]
    assert len(nodes) == 3 == Settings().redis_cluster_slot_groups
    for node in nodes:
        assert "/usr/local/etc/redis/redis.conf" in services[node]["command"]
    # No replicas by default: three masters, one slot group each.
    init = services["redis-cluster-init"]["environment"]
    assert init.get("REDIS_REPLICAS", "0") == "0"
    instances = [n for n in services if n.startswith("sankofa-")]
    assert instances
    for name in instances:
        env = services[name]["environment"]
        assert str(env["SANKOFA_REDIS_CLUSTER"]).lower() == "true", name
        assert any(f"@{node}:" in env["SANKOFA_REDIS_URL"] for node in nodes), name


def test_kubernetes_configmap_sets_it() -> None:
    config = load_yaml(K8S / "configmap.yaml")
    assert config["kind"] == "ConfigMap"
    assert config["data"]["SANKOFA_REDIS_CLUSTER"] == "true"


def test_the_native_cluster_starts_a_redis_cluster_by_default() -> None:
    """``up``'s options reach LocalCluster (stopped there: nothing is started)."""
    mod = load_local_cluster()
    captured: dict[str, Any] = {}

    class Stop(Exception):
        pass

    def fake_cluster(workdir: Any, **kwargs: Any) -> Any:
        captured.update(kwargs)
        raise Stop

    real = mod.LocalCluster
    mod.LocalCluster = fake_cluster
    try:
        cases = (["up"], 0), (["up", "--redis-replicas", "1"], 1), (["up", "--single-redis"], None)
        for argv, replicas in cases:
            captured.clear()
            try:
                mod.main(argv)
            except Stop:
                pass
            assert captured["redis_cluster_replicas"] == replicas, argv
    finally:
        mod.LocalCluster = real


def test_the_native_cluster_passes_the_setting(tmp_path: Any) -> None:
    mod = load_local_cluster()
    cluster = mod.LocalCluster(tmp_path, instances_count=1, redis_cluster_replicas=0)
    cluster.redis_cluster = mod.RedisCluster(tmp_path / "rc", masters=3)
    cluster.redis_cluster.nodes = [(7001, None)]  # as if started
    env = cluster.instance_env()
    assert env["SANKOFA_REDIS_CLUSTER"] == "true"
    assert env["SANKOFA_REDIS_URL"] == "redis://127.0.0.1:7001/0"
    single = mod.LocalCluster(tmp_path, instances_count=1).instance_env()
    assert "SANKOFA_REDIS_CLUSTER" not in single
