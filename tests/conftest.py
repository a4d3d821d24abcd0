from __future__ import annotations

import os

import pytest
from hypothesis import settings

# CI explores the same examples on every run, so a red run is reproducible; locally each run
# explores new ones.
settings.register_profile("ci", derandomize=True, max_examples=300)
settings.register_profile("dev", max_examples=300)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture
def anyio_backend() -> str:
    """In-process async tests run on asyncio, the loop the gateway runs on."""
    return "asyncio"
