"""Images for the local Kubernetes' nodes, with no registry: written here or saved from Docker.

Small images (the pod sandbox ``pause``, ``busybox`` for tests and hooks) are written directly as
Docker image archives (a layer tar, a config, a manifest) from static binaries on this machine;
the docker backend's image is taken from the Docker engine with ``docker save``. Either archive is
imported into a node's containerd with ``ctr images import`` in the ``k8s.io`` namespace, which is
where the kubelet looks; pods then run them with ``imagePullPolicy: Never``.

    write_image_archive(Path("pause.tar"), PAUSE_IMAGE, {"/pause": bin_dir / "pause"}, ["/pause"])
    import_archive(Path("/run/gameday-k8s/az-a-r1/containerd.sock"), Path("pause.tar"))
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

PAUSE_IMAGE = "gameday.local/pause:3.10"
BUSYBOX_IMAGE = "gameday.local/busybox:1.35"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian's busybox-static


class ImageLoadError(RuntimeError):
    """An image could not be written, saved or imported; the message says which and why."""


def write_image_archive(
    path: Path,
    ref: str,
    files: dict[str, Path],
    entrypoint: list[str],
    links: dict[str, str] | None = None,
    user: str = "",
) -> Path:
    """A single-layer Docker image archive holding ``files`` (image path -> host file) and
    symbolic ``links`` (image path -> target)."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        dirs: set[str] = set()
        for image_path in sorted(files):
            parts = image_path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    info = tarfile.TarInfo(d)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                    dirs.add(d)
            data = files[image_path].read_bytes()
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
        for image_path, target in sorted((links or {}).items()):
            info = tarfile.TarInfo(image_path.strip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "gameday (chaos/k8s/node_images.py)"}],
    }
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": ["layer.tar"]}]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w") as out:
        for name, blob in (
            ("layer.tar", layer_bytes),
            (config_name, config_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(blob), 0o644
            out.addfile(info, io.BytesIO(blob))
    return path


def busybox_archive(path: Path) -> Path:
    """``BUSYBOX_IMAGE``: Debian's static busybox with every applet linked in /bin."""
    if not BUSYBOX_BINARY.exists():
        raise ImageLoadError(f"{BUSYBOX_BINARY} is missing: apt-get install busybox-static")
    applets = subprocess.run(
        [str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = {f"/bin/{a}": "busybox" for a in applets if a != "busybox"}
    return write_image_archive(
        path, BUSYBOX_IMAGE, {"/bin/busybox": BUSYBOX_BINARY}, ["/bin/busybox"], links
    )


def save_docker_image(ref: str, cache_dir: Path) -> Path:
    """``docker save`` of ``ref`` into ``cache_dir``, named by image id (reused when unchanged)."""
    probe = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", ref],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise ImageLoadError(
            f"image {ref} is not in the Docker engine ({probe.stderr.strip()}); build it with "
            "'gameday images build' (or 'make images')"
        )
    image_id = probe.stdout.strip().removeprefix("sha256:")[:16]
    target = cache_dir / f"{ref.replace('/', '_').replace(':', '_')}-{image_id}.tar"
    if target.exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    for old in cache_dir.glob(f"{ref.replace('/', '_').replace(':', '_')}-*.tar"):
        old.unlink()
    partial = target.with_suffix(".part")
    proc = subprocess.run(
        ["docker", "save", "-o", str(partial), ref], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ImageLoadError(f"docker save {ref} failed: {proc.stderr.strip()}")
    partial.rename(target)
    return target


def import_archive(
    socket: Path, archive: Path, started: Callable[[subprocess.Popen[str]], None] | None = None
) -> None:
    """Import an image archive into the containerd at ``socket`` (namespace ``k8s.io``).
    ``started`` gets the ``ctr`` process as soon as it runs (so a caller can kill it)."""
    proc = subprocess.Popen(
        ["ctr", "-a", str(socket), "-n", "k8s.io", "images", "import", str(archive)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if started is not None:
        started(proc)
    _, err = proc.communicate()
    if proc.returncode != 0:
        raise ImageLoadError(f"ctr import of {archive.name} failed: {err.strip()[-400:]}")
