"""charts/gameday: lint, render, strict validation against the Kubernetes 1.37 schemas, and the
rendered cluster matching the topology and the Toxiproxy link plan the other backends use.

Needs helm (on PATH or built by k8s/toolchain.sh): skipped with the reason otherwise. No cluster.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chaos.helm import CHART, Helm, HelmError
from chaos.mesh import plan_links
from cluster.config import ClusterConfig
from cluster.topology import parse_topology

K8S_SCHEMA_VERSION = "1.37.0"

VARIANT: dict[str, Any] = {
    "topology": {"azs": 3, "racksPerAz": 2, "nodesPerRack": 2, "partitions": 8},
    "placement": {
        "zones": ["us-east-1a", "us-east-1b", "us-east-1c"],
        "rackLabel": "gameday.dev/rack",
    },
    "image": {"registry": "registry.example.com/team", "tag": "0.1.0", "pullPolicy": "Always"},
    "storage": {"storageClassName": "gp3", "size": "5Gi"},
    "credentials": {"secretAccessKey": "s3cret-for-the-test"},
    "networkPolicy": {"apiFrom": [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}]},
}


@pytest.fixture(scope="module")
def helm() -> Helm:
    try:
        return Helm.find()
    except HelmError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def default_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template(CHART, "gd")


@pytest.fixture(scope="module")
def variant_docs(helm: Helm) -> list[dict[str, Any]]:
    return helm.template(CHART, "gd", VARIANT, namespace="chaos")


def _kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _cluster_config(docs: list[dict[str, Any]]) -> ClusterConfig:
    (secret,) = _kind(docs, "Secret")
    return ClusterConfig.model_validate_json(base64.b64decode(secret["data"]["cluster.json"]))


def _proxies(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    maps = [d for d in _kind(docs, "ConfigMap") if "proxies.json" in d.get("data", {})]
    assert len(maps) == 1
    proxies: list[dict[str, Any]] = json.loads(maps[0]["data"]["proxies.json"])
    return proxies


def _pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    specs = {}
    for doc in docs:
        if doc["kind"] in ("StatefulSet", "Deployment"):
            specs[doc["metadata"]["name"]] = doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            specs[doc["metadata"]["name"]] = doc["spec"]
    return specs


# --- lint and schema validation ------------------------------------------------------------------


def test_lint_strict_is_clean(helm: Helm) -> None:
    out = helm.lint(CHART)
    assert "0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out
    helm.lint(CHART, VARIANT)


@pytest.mark.parametrize("which", ["default_docs", "variant_docs"])
def test_manifests_validate_strictly_against_kubernetes_1_37(
    which: str, request: pytest.FixtureRequest
) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    docs: list[dict[str, Any]] = request.getfixturevalue(which)
    kinds = {d["kind"] for d in docs}
    assert {"StatefulSet", "Deployment", "Service", "Secret", "NetworkPolicy", "Pod"} <= kinds
    errors = []
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, K8S_SCHEMA_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} at {exc.path}")
    assert errors == []


def test_the_validator_would_catch_a_bad_manifest(default_docs: list[dict[str, Any]]) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    sts = json.loads(json.dumps(_kind(default_docs, "StatefulSet")[0]))
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, K8S_SCHEMA_VERSION, strict=True)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"topology": {"azs": 2}}, "/topology/azs"),
        ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
        ({"mesh": {"firstProxyPort": 80}}, "/mesh/firstProxyPort"),
        ({"storage": {"sizee": "1Gi"}}, "/storage"),
        ({"placement": {"zoneLabel": "not a label"}}, "/placement/zoneLabel"),
        ({"raft": {"electionTicks": 2}}, "/raft/electionTicks"),
    ],
)
def test_values_schema_names_the_bad_field(helm: Helm, values: dict[str, Any], where: str) -> None:
    with pytest.raises(HelmError, match=f"at '{where}'"):
        helm.template(CHART, "gd", values)


# --- what the chart deploys ----------------------------------------------------------------------


def test_storage_nodes_get_the_raft_timing_of_the_values(
    helm: Helm, default_docs: list[dict[str, Any]]
) -> None:
    """Every process reads its Raft timing (and the routers their timeouts) from cluster.json:
    by default the other backends' (ClusterConfig's defaults), else the values'."""
    default = _cluster_config(default_docs)
    fields = ClusterConfig.model_fields
    assert (default.tick_ms, default.election_ticks) == (
        fields["tick_ms"].default,
        fields["election_ticks"].default,
    )
    docs = helm.template(CHART, "gd", {"raft": {"tickMs": 100, "electionTicks": 10}})
    assert (_cluster_config(docs).tick_ms, _cluster_config(docs).election_ticks) == (100, 10)
    assert _cluster_config(docs).timeouts().election == 1.0


@pytest.mark.parametrize(("which", "shape"), [("default_docs", "3x2x1"), ("variant_docs", "3x2x2")])
def test_cluster_config_has_every_process_of_the_topology(
    which: str, shape: str, request: pytest.FixtureRequest
) -> None:
    docs: list[dict[str, Any]] = request.getfixturevalue(which)
    config = _cluster_config(docs)
    topo = parse_topology(shape)
    assert config.topology == shape
    expected: dict[str, tuple[str, str, str | None]] = {
        n.id: ("storage", n.az, n.rack) for n in topo.storage_nodes()
    }
    expected |= {p.id: ("router", p.az, None) for p in topo.routers()}
    expected |= {p.id: ("memds", p.az, None) for p in topo.memds()}
    expected["gac"] = ("gac", topo.azs[0], None)
    got = {p.id: (p.role, p.az, p.rack) for p in config.processes.values()}
    assert got == expected
    # One workload per process, named after it; storage nodes as StatefulSets with a volume.
    workloads = {
        d["metadata"]["name"]: d for d in docs if d["kind"] in ("StatefulSet", "Deployment")
    }
    for process in config.processes.values():
        workload = workloads[f"gd-gameday-{process.id}"]
        assert workload["kind"] == ("StatefulSet" if process.role == "storage" else "Deployment")
        if process.role == "storage":
            (claim,) = workload["spec"]["volumeClaimTemplates"]
            assert claim["metadata"]["name"] == "data"


def test_every_link_runs_through_its_own_proxy_as_on_the_other_backends(
    default_docs: list[dict[str, Any]],
) -> None:
    config = _cluster_config(default_docs)
    planned = plan_links(config, "0.0.0.0", 21000)  # the same numbering as local and docker
    proxies = {p["name"]: p for p in _proxies(default_docs)}
    assert set(proxies) == {link.name for link in planned.values()}
    for (src, dst), link in planned.items():
        proxy = proxies[link.name]
        assert proxy["listen"] == link.listen
        port = link.listen.rsplit(":", 1)[1]
        assert proxy["upstream"] == f"gd-gameday-{dst}:{config.process(dst).listen.split(':')[1]}"
        assert config.dial_address(src, dst) == f"gd-gameday-toxiproxy:{port}"
    # Nobody dials a peer directly: every pair that talks has a dial entry.
    assert sum(len(row) for row in config.dial.values()) == len(planned)


def test_without_the_mesh_processes_dial_each_others_services(helm: Helm) -> None:
    docs = helm.template(CHART, "gd", {"mesh": {"enabled": False}})
    config = _cluster_config(docs)
    assert config.dial_address("rt-a", "sn-b1") == "gd-gameday-sn-b1:7100"
    assert config.dial_address("sn-a1", "md-c") == "gd-gameday-md-c:7300"
    assert not [d for d in docs if "toxiproxy" in d["metadata"]["name"]]


def test_processes_are_pinned_to_their_zone_and_rack(variant_docs: list[dict[str, Any]]) -> None:
    specs = _pod_specs(variant_docs)
    terms = specs["gd-gameday-sn-b3"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1b"]},
                {"key": "gameday.dev/rack", "operator": "In", "values": ["az-b-r2"]},
            ]
        }
    ]
    router = specs["gd-gameday-rt-c"]["affinity"]["nodeAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]["nodeSelectorTerms"][0]["matchExpressions"]
    assert router == [
        {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["us-east-1c"]}
    ]
    image = specs["gd-gameday-gac"]["containers"][0]["image"]
    assert image == "registry.example.com/team/gameday-cluster:0.1.0"
    sts = next(
        d for d in _kind(variant_docs, "StatefulSet") if d["metadata"]["name"] == "gd-gameday-sn-a1"
    )
    claim = sts["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "gp3"
    assert claim["resources"]["requests"]["storage"] == "5Gi"


def test_every_pod_runs_non_root_and_every_process_is_probed_on_health(
    default_docs: list[dict[str, Any]],
) -> None:
    specs = _pod_specs(default_docs)
    assert len(specs) == 13 + 1 + 1  # processes, Toxiproxy, the helm test pod
    for name, spec in specs.items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        # No unsafe sysctl by default: a cluster's kubelets refuse the pod unless they allow it.
        assert "sysctls" not in spec["securityContext"], name
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"]["drop"] == ["ALL"], name
            if name.endswith(("-smoke", "-toxiproxy")):
                continue
            assert container["readinessProbe"]["httpGet"]["path"] == "/health", name
            liveness = container["livenessProbe"]
            if name.endswith(("-md-a", "-md-b", "-md-c")):
                assert liveness["tcpSocket"]["port"] == "service", name  # 503 while mapless
            else:
                assert liveness["httpGet"]["path"] == "/health", name


def test_credentials_live_in_a_secret_only(variant_docs: list[dict[str, Any]]) -> None:
    (secret,) = _kind(variant_docs, "Secret")
    assert base64.b64decode(secret["data"]["secret-access-key"]) == b"s3cret-for-the-test"
    assert _cluster_config(variant_docs).credentials == {"gameday": "s3cret-for-the-test"}
    others = [d for d in variant_docs if d["kind"] != "Secret"]
    assert "s3cret-for-the-test" not in json.dumps(others)


def test_a_generated_secret_key_is_long_and_random(helm: Helm) -> None:
    keys = {
        base64.b64decode(
            _kind(helm.template(CHART, "gd"), "Secret")[0]["data"]["secret-access-key"]
        )
        for _ in range(2)
    }
    assert len(keys) == 2 and all(len(k) == 40 for k in keys)


def test_network_policy_keeps_internal_ports_inside_the_release(
    variant_docs: list[dict[str, Any]],
) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in _kind(variant_docs, "NetworkPolicy")}
    release = {"app.kubernetes.io/name": "gameday", "app.kubernetes.io/instance": "gd"}
    internal = policies["gd-gameday-internal"]
    assert internal["podSelector"]["matchLabels"] == release
    assert internal["ingress"] == [{"from": [{"podSelector": {"matchLabels": release}}]}]
    api = policies["gd-gameday-api"]
    assert api["podSelector"]["matchLabels"] == {**release, "app.kubernetes.io/component": "router"}
    assert api["ingress"] == [
        {
            "ports": [{"protocol": "TCP", "port": 8000}],
            "from": [{"namespaceSelector": {"matchLabels": {"team": "sre"}}}],
        }
    ]


def test_helm_test_hook_reaches_every_router(default_docs: list[dict[str, Any]]) -> None:
    (pod,) = _kind(default_docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    routers = env["GAMEDAY_ROUTERS"]["value"].split(",")
    assert routers == ["gd-gameday-rt-a:8000", "gd-gameday-rt-b:8000", "gd-gameday-rt-c:8000"]
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == (
        "gd-gameday-credentials"
    )


def test_each_router_has_a_stable_endpoint_service_of_its_own(
    default_docs: list[dict[str, Any]],
) -> None:
    apis = {
        d["metadata"]["labels"]["gameday.io/endpoint-of"]: d
        for d in _kind(default_docs, "Service")
        if "gameday.io/endpoint-of" in d["metadata"]["labels"]
    }
    assert sorted(apis) == ["rt-a", "rt-b", "rt-c"]
    for router, svc in apis.items():
        assert svc["metadata"]["name"] == f"gd-gameday-{router}-api"
        assert svc["spec"]["type"] == "ClusterIP"  # a virtual IP: it outlives the pod's IP
        assert svc["spec"]["selector"]["gameday.io/process"] == router
        assert svc["spec"]["ports"][0]["targetPort"] == 8000


def test_smoke_signature_is_what_the_router_verifies() -> None:
    from cluster.router.sigv4 import SigV4Verifier

    spec = importlib.util.spec_from_file_location("smoke", CHART / "files" / "smoke.py")
    assert spec is not None and spec.loader is not None
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    body = b'{"TableName": "t"}'
    headers = smoke.signed_headers("10.0.0.5:8000", "DescribeTable", body, "gameday", "sk")
    verifier = SigV4Verifier({"gameday": "sk"})
    principal = verifier.verify("POST", "/", "", headers, body, datetime.now(UTC))
    assert principal.access_key_id == "gameday"
    wrong = SigV4Verifier({"gameday": "another"})
    with pytest.raises(Exception, match="signature"):
        wrong.verify("POST", "/", "", headers, body, datetime.now(UTC))
