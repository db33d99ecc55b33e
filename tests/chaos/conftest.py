"""Fixtures for the Docker backend's tests: the engine and the images, once per session.

Tests that use them are marked ``docker``. The ``engine`` fixture uses the running engine or
starts ``dockerd`` (installed by ``make docker-engine``); only when neither works are the tests
skipped, with the reason, and on CI (``CI`` set) that is a failure instead, never a silent skip.
On CI the images are built from scratch (debootstrap base, no layer cache).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from chaos.images import BuildResult, EngineUnavailable, build_images, ensure_engine


@pytest.fixture(scope="session")
def engine() -> Any:
    try:
        return ensure_engine(start=True)
    except EngineUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the docker tests, but: {exc}")
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def images(engine: Any) -> BuildResult:
    """The images; on CI from scratch (debootstrap base, every layer rebuilt)."""
    return build_images(from_scratch=bool(os.environ.get("CI")))
