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

import contextlib
import hashlib
import io
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

PAUSE_IMAGE = "gameday.local/pause:3.10"
BUSYBOX_IMAGE = "gameday.local/busybox:1.35"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian's busybox-static
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed, as docker save writes it
KEEP_REPO = "gameday.local/import-keep"  # an image being replaced, named while the import runs


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
    socket: Path, archive: Path, started: Callable[[subprocess.Popen[bytes]], None] | None = None
) -> int:
    """Import a Docker image archive (``docker save`` or ``write_image_archive``) into the
    containerd at ``socket`` (namespace ``k8s.io``), sending only the layers it lacks.

    The archive is streamed to ``ctr images import -`` as an OCI image layout whose manifest
    names every layer but whose blobs are only the config, the manifest and the layers the
    node's content store does not hold yet: containerd skips unpacking a layer whose snapshot
    exists, so a rebuilt image whose dependency layers did not change costs only its changed
    top layers (a few MB), not the whole image. Returns the bytes of layers sent. ``started``
    gets the ``ctr`` process as soon as it runs (so a caller can kill it).
    """
    with _old_image_kept(socket, archive_ref(archive)):
        return _import(socket, archive, started)


def _import(
    socket: Path, archive: Path, started: Callable[[subprocess.Popen[bytes]], None] | None
) -> int:
    have = content_digests(socket)
    proc = subprocess.Popen(
        ["ctr", "-a", str(socket), "-n", "k8s.io", "images", "import", "--all-platforms", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # a few lines at most: it cannot fill the pipe
    )
    if started is not None:
        started(proc)
    assert proc.stdin is not None and proc.stderr is not None
    sent = 0
    err = b""
    try:
        sent = write_oci_layout(proc.stdin, archive, have)
    except (BrokenPipeError, OSError) as exc:
        if proc.poll() is None:
            proc.kill()
        err = f"{exc}".encode()
    finally:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    err += proc.stderr.read()
    if proc.wait() != 0:
        raise ImageLoadError(
            f"ctr import of {archive.name} failed: {err.decode(errors='replace').strip()[-400:]}"
        )
    return sent


def archive_ref(archive: Path) -> str:
    """The name containerd gives the image of a Docker archive (its one RepoTag, normalized)."""
    with tarfile.open(archive) as src:
        manifest_file = src.extractfile("manifest.json")
        if manifest_file is None:
            raise ImageLoadError(f"{archive} has no manifest.json (not a Docker image archive)")
        (entry,) = json.loads(manifest_file.read())
        (ref,) = entry["RepoTags"]
    return normalize_ref(ref)


@contextlib.contextmanager
def _old_image_kept(socket: Path, ref: str) -> Iterator[None]:
    """While an import moves ``ref`` to a new image, the image it named stays referenced under a
    temporary name. The layers the import leaves out are the old image's: once the name moves,
    nothing references them until the new image is unpacked, and containerd's garbage collector
    removed them in between ("parent snapshot ... does not exist", seen on a loaded machine)."""
    ctr = ["ctr", "-a", str(socket), "-n", "k8s.io", "images"]
    keep = f"{KEEP_REPO}:{os.getpid()}-{time.monotonic_ns()}"
    kept = subprocess.run([*ctr, "tag", ref, keep], capture_output=True, check=False)
    try:
        yield
    finally:
        if kept.returncode == 0:  # else there was no old image to keep
            subprocess.run([*ctr, "rm", keep], capture_output=True, check=False)


def content_digests(socket: Path) -> set[str]:
    """The blob digests (``sha256:...``) the containerd at ``socket`` holds in ``k8s.io``."""
    proc = subprocess.run(
        ["ctr", "-a", str(socket), "-n", "k8s.io", "content", "ls", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ImageLoadError(f"ctr content ls failed: {proc.stderr.strip()[-400:]}")
    return set(proc.stdout.split())


def write_oci_layout(out: IO[bytes], archive: Path, have: set[str]) -> int:
    """Write the image of a Docker archive to ``out`` as an OCI image layout tar, leaving out
    the layer blobs in ``have``. Returns the bytes of layers written."""
    with tarfile.open(archive) as src:
        manifest_file = src.extractfile("manifest.json")
        if manifest_file is None:
            raise ImageLoadError(f"{archive} has no manifest.json (not a Docker image archive)")
        (entry,) = json.loads(manifest_file.read())
        config_member = src.extractfile(entry["Config"])
        if config_member is None:
            raise ImageLoadError(f"{archive}: config {entry['Config']} is missing")
        config = config_member.read()
        diff_ids = json.loads(config)["rootfs"]["diff_ids"]
        if len(diff_ids) != len(entry["Layers"]):
            raise ImageLoadError(f"{archive}: {len(entry['Layers'])} layers, {len(diff_ids)} ids")
        layers = [
            {"mediaType": OCI_LAYER, "digest": diff_id, "size": src.getmember(name).size}
            for diff_id, name in zip(diff_ids, entry["Layers"], strict=True)
        ]
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": _digest(config), "size": len(config)},
                "layers": layers,
            }
        ).encode()
        (ref,) = entry["RepoTags"]
        index = json.dumps(
            {
                "schemaVersion": 2,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": _digest(manifest),
                        "size": len(manifest),
                        "annotations": {
                            "io.containerd.image.name": normalize_ref(ref),
                            "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                        },
                    }
                ],
            }
        ).encode()
        sent = 0
        with tarfile.open(fileobj=out, mode="w|") as tar:
            _add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            _add(tar, _blob_path(_digest(config)), config)
            for layer, name in zip(layers, entry["Layers"], strict=True):
                if layer["digest"] in have:
                    continue
                info = tarfile.TarInfo(_blob_path(str(layer["digest"])))
                info.size, info.mode = int(layer["size"]), 0o644
                tar.addfile(info, src.extractfile(name))
                sent += info.size
            _add(tar, _blob_path(_digest(manifest)), manifest)
            _add(tar, "index.json", index)
    return sent


def normalize_ref(ref: str) -> str:
    """The name containerd (and the kubelet) give ``ref``: ``gameday-cluster:latest`` is
    ``docker.io/library/gameday-cluster:latest``; a name with a registry host stays as it is."""
    first, _, rest = ref.partition("/")
    if not rest:
        return f"docker.io/library/{ref}"
    if "." in first or ":" in first or first == "localhost":
        return ref
    return f"docker.io/{ref}"


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def _blob_path(digest: str) -> str:
    return "blobs/" + digest.replace(":", "/", 1)


def _add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(blob), 0o644
    tar.addfile(info, io.BytesIO(blob))
