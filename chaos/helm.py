"""The helm CLI, for the chart in charts/gameday: find it, lint, render, install and uninstall.

Only install, upgrade, uninstall and rendering go through helm; every other call to a cluster
uses the Kubernetes Python client (chaos/backends/k8s.py).

    helm = Helm.find()                                  # PATH, else the toolchain's cache
    helm.lint(CHART)                                    # raises HelmError with helm's output
    manifests = helm.template(CHART, "gd", {"topology": {"azs": 3}})
    helm.install(CHART, "gd", values, namespace="gameday", kubeconfig=path, timeout=300)
    helm.uninstall("gd", namespace="gameday", kubeconfig=path)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from chaos.assets import asset

CHART = asset("charts") / "gameday"  # shipped with the package (chaos/assets)
K8S_VERSION = "v1.37.2"  # the local toolchain's version (k8s/toolchain.sh)


class HelmError(RuntimeError):
    """helm is missing or a helm command failed; the message carries its output."""


def toolchain_bin() -> Path:
    """Where k8s/toolchain.sh puts kubectl, helm and the kube-* binaries."""
    root = os.environ.get("GAMEDAY_K8S_CACHE") or str(Path.home() / ".cache" / "gameday" / "k8s")
    return Path(root) / K8S_VERSION / "bin"


@dataclass(frozen=True)
class Helm:
    binary: Path

    @classmethod
    def find(cls) -> Helm:
        """helm on PATH, else the one k8s/toolchain.sh built; HelmError saying how to get it."""
        found = shutil.which("helm")
        if found:
            return cls(Path(found))
        cached = toolchain_bin() / "helm"
        if cached.is_file() and os.access(cached, os.X_OK):
            return cls(cached)
        raise HelmError(
            f"helm is not installed: not on PATH and not in {cached.parent} "
            "(build it with 'bash k8s/toolchain.sh', about 1 minute for helm alone)"
        )

    def run(self, *args: str, timeout: float = 120.0, kubeconfig: Path | None = None) -> str:
        """Run ``helm ARGS``; return stdout or raise HelmError with stderr."""
        env = dict(os.environ)
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        try:
            done = subprocess.run(
                [str(self.binary), *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise HelmError(f"helm {args[0]} did not finish within {timeout:g}s") from exc
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip()
            raise HelmError(f"helm {' '.join(args[:2])} failed: {detail}")
        return done.stdout

    def lint(self, chart: Path = CHART, values: dict[str, Any] | None = None) -> str:
        with _values_file(values) as vf:
            return self.run("lint", "--strict", str(chart), *vf)

    def template(
        self,
        chart: Path = CHART,
        release: str = "gameday",
        values: dict[str, Any] | None = None,
        namespace: str = "default",
    ) -> list[dict[str, Any]]:
        """The manifests ``helm install`` would apply (hooks and tests included), parsed."""
        with _values_file(values) as vf:
            out = self.run("template", release, str(chart), "--namespace", namespace, *vf)
        return [doc for doc in yaml.safe_load_all(out) if doc]

    def install(
        self,
        chart: Path,
        release: str,
        values: dict[str, Any],
        *,
        namespace: str,
        kubeconfig: Path | None = None,
        timeout: float = 300.0,
        wait: bool = True,
    ) -> str:
        """``helm upgrade --install`` (idempotent), creating the namespace if needed."""
        args = ["upgrade", "--install", release, str(chart), "--namespace", namespace]
        args += ["--create-namespace"]
        if wait:
            args += ["--wait", "--timeout", f"{int(timeout)}s"]
        with _values_file(values) as vf:
            return self.run(*args, *vf, timeout=timeout + 30, kubeconfig=kubeconfig)

    def uninstall(
        self, release: str, *, namespace: str, kubeconfig: Path | None = None, timeout: float = 120
    ) -> None:
        """``helm uninstall --wait``; a release that is not there is fine."""
        args = ["uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait"]
        self.run(
            *args, "--timeout", f"{int(timeout)}s", timeout=timeout + 30, kubeconfig=kubeconfig
        )

    def status(
        self, release: str, *, namespace: str, kubeconfig: Path | None = None
    ) -> dict[str, Any] | None:
        """``helm status -o json``, or None when there is no such release."""
        try:
            out = self.run("status", release, "--namespace", namespace, "-o", "json",
                           kubeconfig=kubeconfig)  # fmt: skip
        except HelmError as exc:
            if "not found" in str(exc):
                return None
            raise
        body: dict[str, Any] = json.loads(out)
        return body


@contextlib.contextmanager
def _values_file(values: dict[str, Any] | None) -> Iterator[list[str]]:
    """``-f <tmpfile>`` holding ``values`` as JSON (valid YAML), removed afterwards; or nothing."""
    if not values:
        yield []
        return
    fd, name = tempfile.mkstemp(prefix="gameday-values-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:  # 0600: values may hold the credentials
            json.dump(values, fh)
        yield ["-f", name]
    finally:
        Path(name).unlink(missing_ok=True)
