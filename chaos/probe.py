"""Evidence that a link is cut: one tiny exchange through its proxy that needs the far end.

Storage nodes get a client hello and a ``status`` request in their own wire format
(cluster/storage/wire.py) and must send a reply frame; routers, MemDS and GAC get
``GET /health`` and must send a status line. The nemesis probes a sample of the links a cut
covers (through ``Backend.probe_link``) before it trusts the cut.

    probe(links["sn-a1", "sn-b1"]).reachable            # False: the cut landed
"""

from __future__ import annotations

import re
import socket
import struct
import time
from dataclasses import dataclass

from chaos.mesh import Link
from cluster.storage.wire import encode_frame


@dataclass(frozen=True)
class ProbeResult:
    """Whether a request through the link got an answer from its far end, and what happened."""

    reachable: bool
    detail: str
    elapsed: float = 0.0


# A client's hello and one ``status`` request, in the storage node's own wire format.
_HELLO = encode_frame({"hello": "client"})
_STATUS = encode_frame({"id": 1, "op": "status"})
_MSGPACK_MAP = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3})")


def probe(link: Link, timeout: float = 1.0) -> ProbeResult:
    """Connect to the link's proxy and make one tiny exchange that needs the far end to answer.

    Storage nodes get a client hello and a ``status`` request and must send a reply frame;
    routers, MemDS and GAC get ``GET /health`` and must send a status line (any code). A cut in
    either direction therefore reads as unreachable, even on a link whose real traffic is
    one-way. Never takes much longer than ``timeout`` seconds.
    """
    started = time.monotonic()
    deadline = started + timeout

    def result(reachable: bool, detail: str) -> ProbeResult:
        return ProbeResult(reachable, detail, time.monotonic() - started)

    host, port = _split(link.listen)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if link.protocol == "frames":
                sock.sendall(_HELLO + _STATUS)
                header = _recv_exactly(sock, 5, deadline)
                (length,) = struct.unpack(">I", header[:4])
                if length == 0 or header[4] not in _MSGPACK_MAP:
                    return result(False, f"unexpected reply {header!r}")
                return result(True, f"reply frame of {length} bytes")
            request = f"GET /health HTTP/1.1\r\nHost: {link.listen}\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            line = _recv_line(sock, deadline)
            match = _STATUS_LINE.match(line)
            if match is None:
                return result(False, f"unexpected reply {line[:80]!r}")
            return result(True, f"HTTP {match.group(1).decode()}")
    except ConnectionRefusedError:
        return result(False, "connection refused (proxy disabled or missing)")
    except ConnectionResetError:
        return result(False, "connection reset")
    except TimeoutError:
        return result(False, f"no reply within {timeout:g}s")
    except EOFError:
        return result(False, "connection closed before a reply")
    except OSError as exc:
        return result(False, f"{type(exc).__name__}: {exc}")


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError
    return left


def _recv_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _recv_line(sock: socket.socket, deadline: float, limit: int = 1024) -> bytes:
    data = b""
    while b"\r\n" not in data and len(data) < limit:
        sock.settimeout(_remaining(deadline))
        chunk = sock.recv(limit - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data.split(b"\r\n", 1)[0]


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)
