from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """In-process async tests run on asyncio, the loop the gateway runs on."""
    return "asyncio"
