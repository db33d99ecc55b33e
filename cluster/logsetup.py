"""Logging set-up shared by every cluster process: one line per record, tagged with the id."""

from __future__ import annotations

import logging


def configure(process_id: str, level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s {process_id} %(levelname)s %(name)s: %(message)s",
    )
