"""Certificates and kubeconfigs of the local Kubernetes, made with the openssl command line.

One private CA signs every serving and client certificate (ECDSA P-256, ten years); identities
follow Kubernetes' conventions so the Node and RBAC authorizers do the right thing (nodes are
``O=system:nodes, CN=system:node:<name>``, the admin is in ``system:masters``). Every private key
and kubeconfig is written 0600.

    pki = Pki(state_dir / "pki")
    pki.ensure_ca()
    pki.issue("apiserver", cn="kube-apiserver", ips=["127.0.0.1"], dns=["kubernetes"])
    write_kubeconfig(path, pki, "admin", server="https://127.0.0.1:6443")
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import yaml

DAYS = "3650"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


class PkiError(RuntimeError):
    """openssl failed; the message has its output."""


class Pki:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def ensure_ca(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        if self.ca_cert.exists() and self.ca_key.exists():
            return
        _openssl(
            [
                "req",
                "-x509",
                "-new",
                "-nodes",
                *CURVE,
                "-days",
                DAYS,
                "-subj",
                "/CN=gameday-local-kubernetes-ca",
                "-keyout",
                str(self.ca_key),
                "-out",
                str(self.ca_cert),
            ]
        )
        os.chmod(self.ca_key, 0o600)

    def issue(
        self,
        name: str,
        cn: str,
        org: str | None = None,
        ips: Sequence[str] = (),
        dns: Sequence[str] = (),
    ) -> None:
        """A key and a certificate for both server and client use (kept if already there)."""
        if self.cert(name).exists() and self.key(name).exists():
            return
        subject = (f"/O={org}" if org else "") + f"/CN={cn}"
        csr = self.dir / f"{name}.csr"
        ext = self.dir / f"{name}.ext"
        _openssl(
            [
                "req",
                "-new",
                "-nodes",
                *CURVE,
                "-subj",
                subject,
                "-keyout",
                str(self.key(name)),
                "-out",
                str(csr),
            ]
        )
        os.chmod(self.key(name), 0o600)
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature,keyEncipherment",
            "extendedKeyUsage=serverAuth,clientAuth",
        ]
        alt = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns]
        if alt:
            lines.append("subjectAltName=" + ",".join(alt))
        ext.write_text("\n".join(lines) + "\n")
        _openssl(
            [
                "x509",
                "-req",
                "-in",
                str(csr),
                "-CA",
                str(self.ca_cert),
                "-CAkey",
                str(self.ca_key),
                "-CAcreateserial",
                "-days",
                DAYS,
                "-extfile",
                str(ext),
                "-out",
                str(self.cert(name)),
            ]
        )
        csr.unlink()
        ext.unlink()

    def ensure_service_account_keys(self) -> tuple[Path, Path]:
        """The key pair that signs service-account tokens: (private, public)."""
        private, public = self.dir / "sa.key", self.dir / "sa.pub"
        if not private.exists():
            _openssl(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(private)])
            os.chmod(private, 0o600)
        if not public.exists():
            _openssl(["ec", "-in", str(private), "-pubout", "-out", str(public)])
        return private, public


def write_kubeconfig(path: Path, pki: Pki, name: str, server: str) -> Path:
    """A kubeconfig for identity ``name`` (its certificate embedded), written 0600."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "gameday-local",
                "cluster": {"server": server, "certificate-authority-data": b64(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": b64(pki.cert(name)),
                    "client-key-data": b64(pki.key(name)),
                },
            }
        ],
        "contexts": [
            {"name": "gameday-local", "context": {"cluster": "gameday-local", "user": name}}
        ],
        "current-context": "gameday-local",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(config, out, sort_keys=False)
    os.chmod(path, 0o600)
    return path


def _openssl(args: list[str]) -> None:
    proc = subprocess.run(
        ["openssl", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {proc.stderr.strip()[-400:]}")
