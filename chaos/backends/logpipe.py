"""A size-rotated log for a chatty child: reads its output on stdin, writes ``<log>``, rotates.

Toxiproxy logs every accepted connection even at info level (megabytes a minute on a busy mesh),
and a process started detached writes straight into its file, which nothing could trim. So the
process table can put this reader between a process and its log: it appends to ``--log``,
shifts it to ``.1`` (``.2``, ...) once it passes ``--max-bytes``, and exits when the writer
closes the pipe (its process ended).

    python -m chaos.backends.logpipe --log logs/toxiproxy.log --max-bytes 8388608 --keep 2 < pipe
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import BinaryIO

from chaos.backends.processes import rotate_log


def pump(source: BinaryIO, log: Path, max_bytes: int, keep: int) -> None:
    read = source.readline
    out = log.open("ab")
    try:
        written = out.tell()
        for _ in range(10**12):  # bounded only by the writer: ends at EOF
            line: bytes = read()
            if not line:
                return
            if written + len(line) > max_bytes:
                out.close()
                rotate_log(log, max_bytes=0, keep=keep)
                out = log.open("ab")
                written = 0
            out.write(line)
            out.flush()
            written += len(line)
    finally:
        out.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m chaos.backends.logpipe", description=__doc__)
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--max-bytes", type=int, default=8 * 1024 * 1024)
    parser.add_argument("--keep", type=int, default=2)
    args = parser.parse_args()
    # Ctrl-C in a terminal reaches the whole foreground group: keep reading until EOF instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pump(sys.stdin.buffer, args.log, args.max_bytes, args.keep)


if __name__ == "__main__":
    main()
