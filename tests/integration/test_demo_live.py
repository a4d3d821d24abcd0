"""The monolith's live page (legacy_monolith/live.py) in a real headless browser, served as
`make demo` serves it: `strangler demo` in a subprocess, Chromium (the ``webdriver`` fixture
of conftest.py) on the gateway's port. The page's WebSocket ticker must stream prices and
carry the page's own messages back, its event stream must deliver every status, and the
gateway's metrics must count the WebSocket's 101 on the ``live`` route.

The same checks run against the monolith alone (plain uvicorn), through `strangler serve` in
front of it, and on the demo's monolith port, so a failure shows which part is missing: the
page, the gateway in between, or the demo's serving of the monolith.
"""

from __future__ import annotations

import base64
import itertools
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from legacy_monolith import live
from tests.support import DemoPorts, demo_process, free_port, serve_process, shipped_table

pytestmark = pytest.mark.sockets

T = TypeVar("T")

STRANGLER = [sys.executable, "-m", "proxy"]
#: Short streams: the ticker closes (1000) after TICKS updates 0.2 s apart, the status stream
#: takes 0.8 s. The page passes both parameters on.
TICKS = 6
QUERY = f"?interval=0.2&ticks={TICKS}"
#: What the page subscribes to: the server's four symbols but UMBRELLA.
SUBSCRIBED = ["ACME", "GLOBEX", "INITECH"]
#: Far more than the streams take; a page that is stuck fails the test once it has passed.
SETTLE_SECONDS = 20

STATE = """
if (document.title !== "Live") return {title: document.title, body: document.body.innerText};
const text = (id) => document.getElementById(id).textContent;
return {
  wsState: text("ws-state"), wsClose: text("ws-close"), ticks: text("ticks"),
  subscribed: text("subscribed"), pongs: text("pongs"), pong: text("pong"),
  rows: Array.from(document.querySelectorAll("#prices tr")).map((tr) => ({
    symbol: tr.dataset.symbol, first: tr.dataset.first, cents: tr.dataset.cents,
    changes: tr.dataset.changes, price: tr.querySelector(".price").textContent})),
  sseState: text("sse-state"), status: text("status"),
  statuses: Array.from(document.querySelectorAll("#statuses li")).map((li) => ({
    status: li.dataset.status, id: li.dataset.id})),
};
"""


@dataclass
class Demo:
    gateway: str
    admin: str
    monolith: str


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`strangler demo` with the shipped table (its monolith URL moved to a free port), the
    gateway and the admin port on ports the kernel picks; stopped with Ctrl-C by its pid."""
    ports = DemoPorts.free()
    process, gateway, admin = demo_process(shipped_table(tmp_path, ports), ports, tmp_path / "data")
    try:
        monolith = process.wait_for_line(r"monolith\s+(http://\S+)").group(1)
        yield Demo(gateway, admin, monolith)
    finally:
        code = process.stop(signal.SIGINT)
    assert code == 0, "".join(process.lines)


def test_the_live_page_works_on_the_monolith_alone(
    webdriver: str, monolith: str, tmp_path: Path
) -> None:
    assert_the_live_page_works(webdriver, monolith, tmp_path)


def test_the_live_page_works_through_the_gateway_to_the_monolith_alone(
    webdriver: str, monolith: str, tmp_path: Path
) -> None:
    """`strangler serve` with the shipped table in front of plain uvicorn: the gateway's part
    without the demo's."""
    process, gateway, admin = serve_process(
        shipped_table(tmp_path, DemoPorts(int(monolith.rsplit(":", 1)[1]), free_port())),
        env={"STRANGLER_DATA_DIR": str(tmp_path / "data")},
    )
    try:
        assert_the_live_page_works(webdriver, gateway, tmp_path)
        assert_the_gateway_counted_the_upgrade(admin)
    finally:
        process.stop()


def test_the_live_page_works_on_the_demos_monolith_port(
    webdriver: str, demo: Demo, tmp_path: Path
) -> None:
    assert_the_live_page_works(webdriver, demo.monolith, tmp_path)


def test_the_live_page_works_through_the_demos_gateway(
    webdriver: str, demo: Demo, tmp_path: Path
) -> None:
    assert_the_live_page_works(webdriver, demo.gateway, tmp_path)
    assert_the_gateway_counted_the_upgrade(demo.admin)


def assert_the_live_page_works(session: str, base: str, tmp_path: Path) -> None:
    call(session, "url", {"url": f"{base}/live{QUERY}"})
    # Something else than the page (an error page) is reported as it is.
    assert "title" not in call(session, "execute/sync", {"script": STATE, "args": []})
    state = wait_until(
        lambda: call(session, "execute/sync", {"script": STATE, "args": []}),
        # Both streams over: the socket closed (whatever the code), the status stream done
        # or given up on.
        lambda got: got["wsClose"] != "none yet" and got["sseState"] in ("done", "failed"),
        timeout=SETTLE_SECONDS,
    )
    png = base64.b64decode(httpx.get(f"{session}/screenshot", timeout=30).json()["value"])
    (tmp_path / "live-page.png").write_bytes(png)

    # The event stream: every status, in order, each with its event id; then the page
    # stopped listening.
    assert {key: state[key] for key in ("sseState", "status", "statuses")} == {
        "sseState": "done",
        "status": "delivered",
        "statuses": [
            {"status": status, "id": str(number)} for number, status in enumerate(live.STATUSES, 1)
        ],
    }
    # The ticker, server to client: every price is the seeded walk's and moved on every
    # tick, and the server closed the socket cleanly after the ticks asked for.
    walks = {
        symbol: list(itertools.islice(live.price_walk(symbol), TICKS)) for symbol in SUBSCRIBED
    }
    assert {key: state[key] for key in ("wsState", "wsClose", "ticks", "rows")} == {
        "wsState": "closed",
        "wsClose": "1000",
        "ticks": str(TICKS),
        "rows": [
            {
                "symbol": symbol,
                "first": str(prices[0]),
                "cents": str(prices[-1]),
                "changes": str(TICKS - 1),
                "price": f"{prices[-1] / 100:.2f}",
            }
            for symbol, prices in walks.items()
        ],
    }
    # Client to server: the server read the page's subscription (so no UMBRELLA row above)
    # and answered its one ping.
    assert {key: state[key] for key in ("subscribed", "pongs", "pong")} == {
        "subscribed": " ".join(SUBSCRIBED),
        "pongs": "1",
        "pong": "1",
    }


def assert_the_gateway_counted_the_upgrade(admin: str) -> None:
    """The gateway's own record: the WebSocket was upgraded (101) on the live route, beside
    the page and the event stream (200 each; a reconnecting EventSource would add more)."""
    expected = {("GET", "101"): 1.0, ("GET", "200"): 2.0}
    counted = wait_until(lambda: live_requests(admin), lambda got: got == expected)
    assert counted == expected


def live_requests(admin: str) -> dict[tuple[str, str], float]:
    """The gateway's request counts on the live route, by method and status code."""
    text = httpx.get(f"{admin}/metrics", timeout=10).text
    return {
        (sample.labels["method"], sample.labels["code"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "strangler_requests_total" and sample.labels.get("route") == "live"
    }


def wait_until(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 5.0) -> T:
    """``read()`` until ``done`` says its value is final, or the time is up: the last value,
    for the caller to assert on (so a failure shows what was there)."""
    deadline = time.monotonic() + timeout
    value = read()
    while not done(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = read()
    return value


def call(session: str, command: str, payload: dict[str, Any]) -> Any:
    reply = httpx.post(f"{session}/{command}", json=payload, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["value"]
