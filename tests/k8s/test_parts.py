"""The local Kubernetes' pure parts, without a cluster: node shapes, config files, image archives,
certificates. Fast; they run everywhere."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from chaos.k8s import host, manifests
from chaos.k8s.control_plane import flags
from chaos.k8s.node_images import write_image_archive
from chaos.k8s.nodes import (
    INFRA_NODE,
    POOL_LABEL,
    RACK_LABEL,
    ZONE_LABEL,
    LocalKubeError,
    parse_shape,
)
from chaos.k8s.pki import Pki, write_kubeconfig


def test_shape_gives_one_node_per_rack_in_topology_order() -> None:
    nodes = parse_shape("3x2")
    assert [n.name for n in nodes] == [
        "az-a-r1",
        "az-a-r2",
        "az-b-r1",
        "az-b-r2",
        "az-c-r1",
        "az-c-r2",
    ]
    assert [n.index for n in nodes] == [1, 2, 3, 4, 5, 6]
    assert nodes[3].labels == {ZONE_LABEL: "az-b", RACK_LABEL: "az-b-r2"}
    assert nodes[3].ip == "10.244.4.1" and nodes[3].pod_cidr == "10.244.4.0/24"
    assert all(len(n.bridge) <= 15 for n in nodes)  # Linux interface names
    assert [n.name for n in parse_shape("3x2x4")] == [n.name for n in nodes]  # a topology


def test_infra_node_is_in_no_zone_and_tainted() -> None:
    infra = parse_shape("3x1", infra=True)[-1]
    assert infra.name == INFRA_NODE and infra.index == 4
    assert infra.labels == {POOL_LABEL: INFRA_NODE}
    assert infra.taints == [{"key": POOL_LABEL, "value": INFRA_NODE, "effect": "NoSchedule"}]


@pytest.mark.parametrize("shape", ["", "3", "x2", "0x2", "3x0", "27x1", "3xtwo"])
def test_bad_shapes_say_what_is_expected(shape: str) -> None:
    with pytest.raises(LocalKubeError, match="shape"):
        parse_shape(shape)


def test_kubelet_config_pins_the_node(tmp_path: Path) -> None:
    node = parse_shape("3x2")[2]
    text = manifests.kubelet_config(
        node, Pki(tmp_path), Path("/run/x.sock"), tmp_path, "10.96.0.10", "gameday-k8s"
    )
    config = yaml.safe_load(text)
    assert config["address"] == node.ip == "10.244.3.1"
    assert config["cgroupRoot"] == "/gameday-k8s/az-b-r1"
    assert config["cgroupDriver"] == "cgroupfs" and config["failCgroupV1"] is False
    assert config["containerRuntimeEndpoint"] == "unix:///run/x.sock"
    assert config["clusterDNS"] == ["10.96.0.10"]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["registerWithTaints"] == []
    # The k8s backend's mesh pod sets it (chart value mesh.sysctls): the kubelet must allow it.
    assert config["allowedUnsafeSysctls"] == ["net.ipv4.tcp_syn_retries"]


def test_cni_config_keeps_pods_on_their_node_subnet(tmp_path: Path) -> None:
    conf = json.loads(
        manifests.cni_conflist("gdk-az-a-r1", "10.244.1.0/24", "10.244.1.1", tmp_path)
    )
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "gdk-az-a-r1" and bridge["ipMasq"] is False
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.244.1.0/24", "gateway": "10.244.1.1"}]]


def test_cluster_objects_pin_volumes_to_their_node(tmp_path: Path) -> None:
    objects = manifests.cluster_objects(parse_shape("3x1"), tmp_path)
    classes = [o for o in objects if o["kind"] == "StorageClass"]
    assert classes[0]["metadata"]["name"] == manifests.STORAGE_CLASS
    assert classes[0]["volumeBindingMode"] == "WaitForFirstConsumer"
    pvs = [o for o in objects if o["kind"] == "PersistentVolume"]
    assert len(pvs) == 3 * manifests.VOLUMES_PER_NODE
    pv = pvs[-1]
    term = pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
    assert term["values"] == ["az-c-r1"]
    assert pv["spec"]["local"]["path"].startswith(str(tmp_path / "az-c-r1"))


def test_image_archive_is_a_docker_archive(tmp_path: Path) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF fake")
    archive = write_image_archive(
        tmp_path / "img.tar",
        "gameday.local/tool:1",
        {"/bin/tool": binary},
        ["/bin/tool"],
        links={"/bin/alias": "tool"},
    )
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["gameday.local/tool:1"]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        layer = tar.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/bin/tool"]
    layer_path = tmp_path / "layer.tar"
    layer_path.write_bytes(layer)
    with tarfile.open(layer_path) as tar:
        assert tar.getmember("bin/tool").mode == 0o755
        assert tar.getmember("bin/alias").linkname == "tool"


def test_certificates_carry_kubernetes_identities(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    pki.ensure_ca()
    pki.issue("node-x", "system:node:az-a-r1", "system:nodes", ips=["10.244.1.1"])
    text = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(pki.cert("node-x")),
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "O = system:nodes" in text and "CN = system:node:az-a-r1" in text
    assert "IP Address:10.244.1.1" in text
    assert pki.key("node-x").stat().st_mode & 0o777 == 0o600
    assert pki.ca_key.stat().st_mode & 0o777 == 0o600
    config = write_kubeconfig(tmp_path / "kc", pki, "node-x", "https://127.0.0.1:6443")
    assert config.stat().st_mode & 0o777 == 0o600
    assert yaml.safe_load(config.read_text())["clusters"][0]["cluster"]["server"].endswith(":6443")


def test_flags() -> None:
    assert flags({"a": "1", "b": None}) == ["--a=1", "--b"]


def test_teardown_finds_our_chains_in_an_iptables_dump() -> None:
    dump = "\n".join(
        [
            "*filter",
            ":FORWARD DROP [0:0]",
            ":GAMEDAY-K8S - [0:0]",
            ":KUBE-FORWARD - [0:0]",
            ":DOCKER-USER - [0:0]",
            "-A FORWARD -j GAMEDAY-K8S",
            "COMMIT",
        ]
    )
    assert host.our_chains(dump) == ["GAMEDAY-K8S", "KUBE-FORWARD"]


def test_the_load_generator_gets_the_weight_of_a_machine_for_its_whole_session() -> None:
    """favour_load_generator sets the autogroup weight of the load generator's session (what
    the scheduler weighs against the nodes' cgroup) and its own nice; pytest's stay."""
    if os.geteuid() != 0 or not Path("/proc/self/autogroup").exists():
        pytest.skip("needs root and a kernel with autogroups")
    before = Path("/proc/self/autogroup").read_text()
    child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert host.favour_load_generator(child.pid, -3)
        assert Path(f"/proc/{child.pid}/autogroup").read_text().split()[-2:] == ["nice", "-3"]
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == -3
        assert Path("/proc/self/autogroup").read_text() == before
    finally:
        child.kill()
        child.wait()
