"""Image import into a node's containerd: only the layers the node lacks are sent.

Runs a private containerd (own root, state and socket under tmp_path), as every node of the
local Kubernetes has; skipped with the reason without root or containerd.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos.k8s.node_images import import_archive, normalize_ref, write_oci_layout


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _docker_archive(path: Path, ref: str, layers: list[bytes]) -> list[str]:
    """A ``docker save``-style archive of ``layers``; returns their digests (diff ids)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": ["/bin/true"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    names = [f"{d.split(':')[1]}/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": names}]
    with tarfile.open(path, "w") as tar:
        for name, blob in [
            *zip(names, layers, strict=True),
            (config_name, config),
            ("manifest.json", json.dumps(manifest).encode()),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return diff_ids


def test_oci_layout_names_every_layer_but_carries_only_the_missing_ones(tmp_path: Path) -> None:
    deps = _layer({"opt/deps/big.py": b"x" * 50_000})
    app = _layer({"opt/app/main.py": b"print('v2')\n"})
    archive = tmp_path / "img.tar"
    deps_id, app_id = _docker_archive(archive, "gameday-cluster:latest", [deps, app])
    out = io.BytesIO()
    sent = write_oci_layout(out, archive, have={deps_id})
    assert sent == len(app)
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (entry,) = index["manifests"]
        manifest_path = "blobs/" + entry["digest"].replace(":", "/")
        manifest = json.loads(tar.extractfile(manifest_path).read())  # type: ignore[union-attr]
    assert [layer["digest"] for layer in manifest["layers"]] == [deps_id, app_id]
    assert "blobs/" + app_id.replace(":", "/") in names
    assert "blobs/" + deps_id.replace(":", "/") not in names
    assert entry["annotations"]["io.containerd.image.name"] == (
        "docker.io/library/gameday-cluster:latest"
    )


def test_refs_are_named_as_containerd_names_them() -> None:
    assert normalize_ref("busybox:1") == "docker.io/library/busybox:1"
    assert normalize_ref("me/app:1") == "docker.io/me/app:1"
    assert normalize_ref("gameday.local/pause:3.10") == "gameday.local/pause:3.10"
    assert normalize_ref("localhost:5000/x:1") == "localhost:5000/x:1"


@pytest.fixture
def containerd(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a private containerd needs root")
    if shutil.which("containerd") is None or shutil.which("ctr") is None:
        pytest.skip("containerd is not installed (bash k8s/packages.sh)")
    base = Path("/tmp") / f"gd-ctd-{os.getpid()}"  # unix socket paths are short
    socket = base / "ctd.sock"
    (base / "root").mkdir(parents=True)
    config = base / "config.toml"
    config.write_text(
        f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket}"\n'
    )
    log = (tmp_path / "containerd.log").open("w")
    proc = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ctr", "-a", str(socket), "version"], capture_output=True).returncode:
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(
                    f"containerd did not start: {(tmp_path / 'containerd.log').read_text()}"
                )
            time.sleep(0.2)
        yield socket
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        subprocess.run(["umount", "-R", str(base / "root")], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def _images(socket: Path) -> dict[str, list[str]]:
    out = subprocess.run(
        ["ctr", "-a", str(socket), "-n", "k8s.io", "images", "check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[0]: line.split() for line in out.splitlines()[1:]}


def test_a_rebuilt_image_sends_only_its_changed_layer(containerd: Path, tmp_path: Path) -> None:
    deps = _layer({"opt/deps/big.py": os.urandom(200_000)})
    v1, v2 = _layer({"app.py": b"v1"}), _layer({"app.py": b"v2"})
    _docker_archive(tmp_path / "v1.tar", "gameday-cluster:latest", [deps, v1])
    _docker_archive(tmp_path / "v2.tar", "gameday-cluster:latest", [deps, v2])
    assert import_archive(containerd, tmp_path / "v1.tar") == len(deps) + len(v1)
    assert import_archive(containerd, tmp_path / "v2.tar") == len(v2)
    name = "docker.io/library/gameday-cluster:latest"
    row = _images(containerd)[name]
    # complete: every blob the manifest names is in the store; true: unpacked into snapshots
    assert "complete" in row and row[-1] == "true", row
    # Importing the same image again sends no layer at all.
    assert import_archive(containerd, tmp_path / "v2.tar") == 0
    # The old image, kept under a temporary name while the name moved, is not kept after.
    assert set(_images(containerd)) == {name}
