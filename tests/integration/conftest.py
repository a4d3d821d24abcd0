from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import RawUpstream, Script, running_gateway, write_table

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
