"""Fixtures shared by the integration tests: a gateway in front of a raw upstream, raw
upstreams alone, the stub monolith alone, and a headless browser driven over WebDriver."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import (
    Process,
    RawUpstream,
    Script,
    free_port,
    need,
    running_gateway,
    wait_for,
    write_table,
)

ProxyTo = Callable[..., tuple[RawUpstream, int]]


@pytest.fixture
def proxy_to(tmp_path: Path) -> Iterator[ProxyTo]:
    """Start a raw upstream with ``script`` and a gateway routing everything to it; returns the
    upstream and the gateway's public port. ``base`` is appended to the backend URL, ``extra``
    to the backend's YAML mapping."""
    with contextlib.ExitStack() as stack:

        def start(script: Script, *, base: str = "", extra: str = "") -> tuple[RawUpstream, int]:
            upstream = RawUpstream(script).start()
            stack.callback(upstream.stop)
            config = write_table(
                tmp_path / "routes.yaml", {"up": f"{{url: '{upstream.url}{base}'{extra}}}"}
            )
            _, servers = stack.enter_context(running_gateway(config))
            return upstream, servers.port("gateway")

        yield start


@pytest.fixture
def start_upstream() -> Iterator[Callable[[Script], RawUpstream]]:
    """Start raw upstreams answering with a script each; all are stopped after the test."""
    started: list[RawUpstream] = []

    def start(script: Script) -> RawUpstream:
        started.append(RawUpstream(script).start())
        return started[-1]

    yield start
    for upstream in started:
        upstream.stop()


# ---- a headless browser --------------------------------------------------------------------


@pytest.fixture
def webdriver(tmp_path: Path) -> Iterator[str]:
    """A chromedriver session with headless chromium; yields the session's URL."""
    chromium, driver = need("chromium"), need("chromedriver")
    port = free_port()
    process = subprocess.Popen(
        [driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _up(base), timeout=20)
        options = {
            "binary": chromium,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--window-size=1400,900",
                f"--user-data-dir={tmp_path / 'chromium'}",
            ],
        }
        created = httpx.post(
            f"{base}/session",
            json={"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
            timeout=60,
        ).json()
        session = f"{base}/session/{created['value']['sessionId']}"
        try:
            yield session
        finally:
            httpx.delete(session, timeout=30)
    finally:
        process.terminate()
        process.wait(20)


def _up(base: str) -> bool:
    try:
        return bool(httpx.get(f"{base}/status", timeout=1).json()["value"]["ready"])
    except (httpx.HTTPError, ValueError, KeyError):
        return False


@pytest.fixture
def monolith() -> Iterator[str]:
    """The stub monolith alone, as `python -m legacy_monolith` runs it (plain uvicorn)."""
    port = free_port()
    process = Process([sys.executable, "-m", "legacy_monolith", "--port", str(port)])
    try:
        process.wait_for_line(r"Uvicorn running on")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
