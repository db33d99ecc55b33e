"""Container images for the docker backend, built on this machine with no registry at all.

Two images: ``gameday-base:bookworm``, the equivalent of ``python:3.11-slim`` (Debian bookworm
minbase plus python3 3.11), made with debootstrap and ``docker import`` when it is missing; and
``gameday-cluster:latest`` (docker/Dockerfile) on top of it, which runs any cluster process and
Toxiproxy. The project and its dependencies go in as wheels built on the host, and the image
build itself runs with no network (``network_mode="none"``), so nothing is fetched inside Docker.
Rebuilds reuse cached layers: only what changed (usually the project's own wheel) is redone.

    result = build_images(on_event)        # on_event(BuildEvent) reports progress
    gameday images build                   # the same, with a progress display
    gameday images build --from-scratch    # debootstrap again and rebuild every layer

The engine: ``engine()`` returns a Docker SDK client or raises ``EngineUnavailable`` saying why;
``ensure_engine()`` also starts ``dockerd`` when it is installed and we are root (the Makefile's
``docker-engine`` target and .ci/run install it from Debian first: docker/engine.sh).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.streaming import failure, run_streaming

# The Docker SDK has no type hints, and type checkers run from the repository root would take
# the docker/ folder (Dockerfile) for it: clients are typed as Any, which they would be anyway.
DockerClient = Any

BASE_IMAGE = "gameday-base:bookworm"
CLUSTER_IMAGE = "gameday-cluster:latest"
IMAGE_LABEL = "io.gameday.image"  # on both images: "base" or "cluster"
SOURCE_LABEL = "io.gameday.source"  # on the cluster image: its source_digest()
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("python3", "python3-venv")
IMAGE_PYTHON = (3, 11)  # bookworm's python3: the host's wheels must be built for it
PROJECT_FILES = ("pyproject.toml", "README.md")
PROJECT_PACKAGES = ("cluster", "chaos", "workloads", "checks")
DOCKERD_LOG = Path("/var/log/gameday-dockerd.log")


class EngineUnavailable(RuntimeError):
    """No Docker engine answers (none installed, not started, or no permission)."""


class ImageBuildError(RuntimeError):
    """A step of the image build failed; the message says which and why."""


# --- the engine ------------------------------------------------------------------------------


def engine(timeout: float = 60.0) -> DockerClient:
    """A Docker SDK client for the local engine (``DOCKER_HOST`` or the default socket)."""
    try:
        from docker.client import DockerClient as Client
        from docker.errors import DockerException
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise EngineUnavailable(f"the Docker SDK for Python is not installed: {exc}") from None
    try:
        client = Client.from_env(timeout=int(timeout))
        client.ping()
    except (DockerException, OSError) as exc:
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise EngineUnavailable(
            f"no Docker engine answers at {where} ({_short(exc)}); start one with "
            "'make docker-engine' (installs docker.io from Debian and starts dockerd)"
        ) from None
    return client


def ensure_engine(start: bool = True, wait: float = 60.0) -> DockerClient:
    """The engine's client; if none answers and ``start``, start ``dockerd`` (root only).

    Raises ``EngineUnavailable`` with the reason when there is no engine and none can be started.
    """
    try:
        return engine()
    except EngineUnavailable as first:
        if not start:
            raise
        dockerd = shutil.which("dockerd") or next(
            (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if Path(p).exists()), None
        )
        if dockerd is None:
            raise EngineUnavailable(
                f"{first}; and dockerd is not installed (apt-get install docker.io)"
            ) from None
        if os.geteuid() != 0:
            raise EngineUnavailable(f"{first}; and starting dockerd needs root") from None
        with DOCKERD_LOG.open("ab") as log:
            subprocess.Popen(
                [dockerd],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + wait
        while True:
            try:
                return engine()
            except EngineUnavailable:
                if time.monotonic() > deadline:
                    raise EngineUnavailable(
                        f"started {dockerd}, but it did not answer within {wait:g}s; "
                        f"see {DOCKERD_LOG}"
                    ) from None
                time.sleep(0.5)


def image_exists(client: DockerClient, name: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(name)
    except ImageNotFound:
        return False
    return True


def source_digest() -> str:
    """A digest of everything the cluster image is built from: the packages, pyproject, docker/.

    The image carries it as a label, so a checkout or an upgrade that changed any of it is seen
    as a stale image (its processes may not even read today's cluster config) and rebuilt.
    """
    from chaos.assets import asset

    digest = hashlib.sha256()
    files: list[tuple[str, Path]] = [(name, asset(name)) for name in PROJECT_FILES]
    docker_dir = asset("docker")
    files += [(f"docker/{name}", docker_dir / name) for name in ("Dockerfile", "healthcheck.py")]
    for package in PROJECT_PACKAGES:
        root = Path(str(importlib.import_module(package).__file__)).parent
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((f"{package}/{path.relative_to(root)}", path))
    for name, path in files:
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_is_current(client: DockerClient) -> bool:
    """True when the cluster image exists and was built from this very source."""
    from docker.errors import ImageNotFound

    try:
        image = client.images.get(CLUSTER_IMAGE)
    except ImageNotFound:
        return False
    labels = image.labels or {}
    return bool(labels.get(SOURCE_LABEL) == source_digest())


# --- progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildEvent:
    """One thing that happened in a build: ``stage`` starts, progresses, or is done.

    ``stage`` is "base", "wheels" or "image"; ``step``/``steps`` count Dockerfile steps in the
    image stage; ``line`` is the latest output line worth showing.
    """

    stage: str
    line: str = ""
    step: int | None = None
    steps: int | None = None
    done: bool = False
    cached: bool = False


@dataclass
class BuildResult:
    base_built: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    image_id: str = ""
    steps: int = 0
    cached_steps: int = 0


OnEvent = Callable[[BuildEvent], None]


def _quiet(_: BuildEvent) -> None:
    pass


# --- the base image --------------------------------------------------------------------------


def build_base(client: DockerClient, on_event: OnEvent = _quiet) -> None:
    """Debootstrap bookworm minbase + python3 into a scratch dir and ``docker import`` it.

    debootstrap fetches Debian's packages on the host (the machine's package mirror); Docker
    itself pulls nothing.
    """
    debootstrap = shutil.which("debootstrap") or (
        "/usr/sbin/debootstrap" if Path("/usr/sbin/debootstrap").exists() else None
    )
    if debootstrap is None:
        raise ImageBuildError(
            f"{BASE_IMAGE} is missing and building it needs debootstrap: "
            "apt-get install debootstrap (or run 'make docker-engine')"
        )
    if os.geteuid() != 0:
        raise ImageBuildError(f"building {BASE_IMAGE} with debootstrap needs root")
    rootfs = Path(tempfile.mkdtemp(prefix="gameday-base-", dir=_scratch_dir()))
    try:
        argv = [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            DEBIAN_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ]
        on_event(BuildEvent("base", f"debootstrap {DEBIAN_SUITE} minbase + python3"))
        _run_streaming(argv, "base", on_event, env={"DEBIAN_FRONTEND": "noninteractive"})
        python = rootfs / "usr" / "bin" / "python3"
        if not python.exists():
            raise ImageBuildError(f"debootstrap finished but {python} is missing")
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
        ):
            target = rootfs / junk
            if target.is_dir():
                for child in target.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        on_event(BuildEvent("base", f"docker import {BASE_IMAGE}"))
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert tar.stdout is not None
        repository, _, tag = BASE_IMAGE.partition(":")
        try:
            client.api.import_image_from_stream(
                tar.stdout,
                repository=repository,
                tag=tag,
                changes=[
                    "ENV LANG=C.UTF-8",
                    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    f"LABEL {IMAGE_LABEL}=base",
                    'CMD ["python3"]',
                ],
            )
        finally:
            _, err = tar.communicate()
        if tar.returncode != 0:
            raise ImageBuildError(f"tar of the base rootfs failed: {err.decode(errors='replace')}")
        if not image_exists(client, BASE_IMAGE):
            raise ImageBuildError(f"docker import did not produce {BASE_IMAGE}")
        on_event(BuildEvent("base", f"{BASE_IMAGE} imported", done=True))
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


# --- wheels ----------------------------------------------------------------------------------


def wheel_cache() -> Path:
    """Wheels kept between builds, so that a rebuild needs no package index at all."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "gameday" / "wheels"


def build_wheels(out: Path, on_event: OnEvent = _quiet) -> tuple[list[Path], Path]:
    """The project's wheel and every dependency's, built on the host into ``out``.

    Returns (dependency wheels, project wheel). Tries the wheel cache alone first; only when it
    lacks something does pip ask the package index, and the cache keeps the result.
    """
    if sys.version_info[:2] != IMAGE_PYTHON:
        raise ImageBuildError(
            f"the image runs Python {'.'.join(map(str, IMAGE_PYTHON))}, but this is Python "
            f"{sys.version.split()[0]}: run 'gameday images build' from a "
            f"{'.'.join(map(str, IMAGE_PYTHON))} environment so that the wheels fit"
        )
    cache = wheel_cache()
    cache.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gameday-src-", dir=_scratch_dir()) as tmp:
        src = Path(tmp) / "src"
        _copy_source(src)
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
        offline = [*pip, "wheel", "--no-index", "--find-links", str(cache), "-w", str(out)]
        # Fixed timestamps inside the wheel: the same source gives the same bytes, so an
        # unchanged tree rebuilds the image entirely from the layer cache.
        env = {"SOURCE_DATE_EPOCH": "315532800"}
        on_event(BuildEvent("wheels", "pip wheel (from the local wheel cache)"))
        try:
            _run_streaming([*offline, str(src)], "wheels", on_event, env)
        except ImageBuildError:
            on_event(BuildEvent("wheels", "cache incomplete: pip wheel from the package index"))
            for stale in out.glob("*.whl"):
                stale.unlink()
            online = [*pip, "wheel", "--find-links", str(cache), "-w", str(cache)]
            _run_streaming([*online, str(src), "setuptools>=68", "wheel"], "wheels", on_event, env)
            for built in cache.glob("gameday-*.whl"):
                built.unlink()  # the project's own wheel is rebuilt every time
            _run_streaming([*offline, str(src)], "wheels", on_event, env)
    wheels = sorted(out.glob("*.whl"))
    project = [w for w in wheels if w.name.startswith("gameday-")]
    if len(project) != 1:
        raise ImageBuildError(f"expected one gameday wheel in {out}, found {project}")
    deps = [w for w in wheels if w != project[0]]
    on_event(BuildEvent("wheels", f"{len(deps)} dependencies + {project[0].name}", done=True))
    return deps, project[0]


def _copy_source(dest: Path) -> None:
    """Only what the wheel is built from: no caches, venvs, run directories or build leftovers.

    The packages are copied from where Python imports them, and pyproject.toml and README.md
    from the shipped assets, so this works the same from a checkout (editable install) and from
    an installed wheel. Symlinks (chaos/assets in a checkout) are copied as the files they name.
    """
    from chaos.assets import asset

    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy2(asset(name), dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for package in PROJECT_PACKAGES:
        where = Path(str(importlib.import_module(package).__file__)).parent
        shutil.copytree(where, dest / package, ignore=ignore)


# --- the cluster image -----------------------------------------------------------------------


def toxiproxy_server() -> Path:
    from chaos.backends.local import toxiproxy_binary

    return toxiproxy_binary()


def stage_context(context: Path, deps: list[Path], project: Path) -> None:
    """The build context: Dockerfile, health check, toxiproxy-server, wheels/ and app/."""
    from chaos.assets import asset

    docker_dir = asset("docker")
    (context / "wheels").mkdir(parents=True)
    (context / "app").mkdir()
    shutil.copy2(docker_dir / "Dockerfile", context / "Dockerfile")
    shutil.copy2(docker_dir / "healthcheck.py", context / "healthcheck.py")
    shutil.copy2(toxiproxy_server(), context / "toxiproxy-server")
    for wheel in deps:
        shutil.copy2(wheel, context / "wheels" / wheel.name)
    shutil.copy2(project, context / "app" / project.name)


def build_cluster_image(
    client: DockerClient, context: Path, no_cache: bool, on_event: OnEvent = _quiet
) -> tuple[str, int, int]:
    """``docker build`` with no network; returns (image id, steps, steps taken from cache)."""
    image_id = ""
    steps = cached = 0
    step = 0
    stream: Iterator[dict[str, Any]] = client.api.build(
        path=str(context),
        tag=CLUSTER_IMAGE,
        buildargs={"BASE": BASE_IMAGE},
        labels={IMAGE_LABEL: "cluster", SOURCE_LABEL: source_digest()},
        network_mode="none",  # nothing inside the build can reach any network
        nocache=no_cache,
        rm=True,
        forcerm=True,
        decode=True,
    )
    for chunk in stream:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise ImageBuildError(f"docker build failed: {str(detail).strip()}")
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = str(chunk["aux"]["ID"])
        text = str(chunk.get("stream", "")).strip()
        if not text:
            continue
        if text.startswith("Step ") and "/" in text.split()[1]:
            current, total = text.split()[1].split("/")
            step, steps = int(current), int(total)
            on_event(BuildEvent("image", text, step=step, steps=steps))
        elif text == "---> Using cache":
            cached += 1
            on_event(BuildEvent("image", text, step=step, steps=steps, cached=True))
        else:
            on_event(BuildEvent("image", text.splitlines()[-1], step=step, steps=steps))
    if not image_id:
        image_id = str(client.images.get(CLUSTER_IMAGE).id)
    on_event(BuildEvent("image", f"{CLUSTER_IMAGE} {image_id[:19]}", steps=steps, done=True))
    return image_id, steps, cached


def build_images(on_event: OnEvent = _quiet, from_scratch: bool = False) -> BuildResult:
    """Build (or rebuild) the base image when missing, the wheels, then the cluster image."""
    client = engine()
    result = BuildResult()
    started = time.monotonic()
    if from_scratch and image_exists(client, BASE_IMAGE):
        with contextlib.suppress(Exception):
            client.images.remove(CLUSTER_IMAGE, force=True)
        client.images.remove(BASE_IMAGE, force=True)
    if image_exists(client, BASE_IMAGE):
        on_event(BuildEvent("base", f"{BASE_IMAGE} present", done=True, cached=True))
    else:
        build_base(client, on_event)
        result.base_built = True
    result.seconds["base"] = time.monotonic() - started
    with tempfile.TemporaryDirectory(prefix="gameday-image-", dir=_scratch_dir()) as tmp:
        mark = time.monotonic()
        deps, project = build_wheels(Path(tmp) / "built", on_event)
        result.seconds["wheels"] = time.monotonic() - mark
        mark = time.monotonic()
        context = Path(tmp) / "context"
        stage_context(context, deps, project)
        image_id, steps, cached = build_cluster_image(client, context, from_scratch, on_event)
        result.seconds["image"] = time.monotonic() - mark
    result.image_id, result.steps, result.cached_steps = image_id, steps, cached
    result.seconds["total"] = time.monotonic() - started
    # Earlier builds' cluster images, now untagged (containers still using one keep it). Only
    # label value "cluster": the untagged output of the Dockerfile's deps stage inherits the base
    # image's label "base", and pruning it would throw away the cached dependency layer, so every
    # rebuild would reinstall the dependencies and every k8s node re-import them.
    with contextlib.suppress(Exception):
        client.images.prune(filters={"dangling": True, "label": f"{IMAGE_LABEL}=cluster"})
    return result


# --- helpers ---------------------------------------------------------------------------------


def _scratch_dir() -> str:
    """Big scratch space for rootfs and build contexts (``/var/tmp`` survives a tmpfs /tmp)."""
    return "/var/tmp" if Path("/var/tmp").is_dir() else tempfile.gettempdir()


def _run_streaming(
    argv: list[str], stage: str, on_event: OnEvent, env: dict[str, str] | None = None
) -> None:
    """Run ``argv``, reporting each output line; ImageBuildError with the tail on failure."""
    code, lines = run_streaming(argv, lambda line: on_event(BuildEvent(stage, line)), env)
    if code != 0:
        raise ImageBuildError(failure(argv, code, lines))


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1][:200] if text else type(exc).__name__


# --- the command line: gameday images ... ----------------------------------------------------


def _images_app() -> Any:
    import typer
    from rich.console import Console

    app = typer.Typer(
        no_args_is_help=True,
        rich_markup_mode="rich",
        help="Build the container images of the docker backend (no registry needed).",
    )

    @app.command("build")
    def build(
        from_scratch: bool = typer.Option(
            False, "--from-scratch", help="Rebuild the base with debootstrap and every layer."
        ),
    ) -> None:
        """Build gameday-base:bookworm (debootstrap, only when missing) and gameday-cluster.

        The project and its dependencies are installed from wheels built here; the image build
        has no network. Rebuilds reuse cached layers.
        """
        console = Console()
        try:
            result = build_with_progress(console, from_scratch)
        except (EngineUnavailable, ImageBuildError) as exc:
            Console(stderr=True).print(f"[red]image build failed:[/red] {exc}")
            raise typer.Exit(1) from None
        took = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
        console.print(
            f"[green]built[/green] {CLUSTER_IMAGE} ({result.image_id[:19]}): "
            f"{result.cached_steps}/{result.steps} steps from cache; {took}"
        )

    @app.command("list")
    def list_images() -> None:
        """The gameday images in the local engine."""
        console = Console()
        try:
            client = engine()
        except EngineUnavailable as exc:
            Console(stderr=True).print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        for image in client.images.list(filters={"label": IMAGE_LABEL}):
            size = image.attrs.get("Size", 0) / 1e6
            console.print(f"{', '.join(image.tags) or image.short_id}  {size:.0f} MB")

    return app


def build_with_progress(console: Any, from_scratch: bool = False) -> BuildResult:
    """``build_images`` with a rich progress display: one bar per stage, the latest line."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    titles = {"base": "base image", "wheels": "wheels", "image": "cluster image"}
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[title]:<13}"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}", markup=False),
        console=console,
        transient=False,
    ) as progress:
        tasks = {
            stage: progress.add_task("waiting", title=title, total=None, start=False)
            for stage, title in titles.items()
        }

        def on_event(event: BuildEvent) -> None:
            task = tasks[event.stage]
            if not progress.tasks[task].started:
                progress.start_task(task)
            line = event.line if len(event.line) <= 70 else event.line[:67] + "..."
            if event.done:
                total = event.steps or 1
                progress.update(task, total=total, completed=total, description=line)
                progress.stop_task(task)
            elif event.steps:
                progress.update(
                    task,
                    total=event.steps,
                    completed=max(0, (event.step or 1) - 1),
                    description=line,
                )
            else:
                progress.update(task, description=line)

        return build_images(on_event, from_scratch)


images_app = _images_app()


def main() -> None:
    images_app()


if __name__ == "__main__":
    main()
