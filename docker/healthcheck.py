"""Container health check: exit 0 when the process answers its health URL with HTTP 200.

The URL is GAMEDAY_HEALTH_URL (``http://host:port/path``), or else the admin address of process
GAMEDAY_PROCESS_ID in the cluster config (GAMEDAY_CONFIG, default /etc/gameday/cluster.json)
followed by /health. Standard library only, and no urllib: Docker runs this every few seconds
in every container, so it must start and finish in milliseconds.
"""

import json
import os
import socket
import sys


def health_url() -> str:
    url = os.environ.get("GAMEDAY_HEALTH_URL")
    if url:
        return url
    config = os.environ.get("GAMEDAY_CONFIG", "/etc/gameday/cluster.json")
    process_id = os.environ["GAMEDAY_PROCESS_ID"]
    with open(config) as f:
        admin = json.load(f)["processes"][process_id]["admin"]
    return f"http://{admin}/health"


def check(url: str, timeout: float = 2.0) -> str | None:
    """None when healthy, else what went wrong."""
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        request = f"GET /{path} HTTP/1.0\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
        sock.sendall(request.encode())
        line = sock.makefile("rb").readline(200)
    parts = line.split()
    if len(parts) >= 2 and parts[1] == b"200":
        return None
    return f"{url}: {line.strip()!r}"


def main() -> int:
    try:
        url = health_url()
        problem = check(url)
    except (OSError, KeyError, ValueError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        return 0
    print(problem, file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
