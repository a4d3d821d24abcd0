"""The monolith's live feature in-process (legacy_monolith/live.py, through the app's
middleware): the event stream's exact bytes, the ticker's messages both ways and its close,
the prices every run sees, and a page that fetches nothing from elsewhere."""

from __future__ import annotations

import itertools
import re
import time
import warnings
from collections.abc import Iterator

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from legacy_monolith import live
from legacy_monolith.app import create_app

with warnings.catch_warnings():
    # TestClient would rather run on httpx2, which this project does not depend on; on httpx
    # it works the same and only warns, once, at import.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient, WebSocketTestSession

#: The first prices of the seeded walks: every run, every connection, every Python 3.
ACME = [12473, 12529, 12584, 12707, 12694, 12749]
GLOBEX = [4187, 4195, 4179, 4218, 4179, 4207]

INTERVAL_RANGE = "interval is a number of seconds from 0.05 to 60.0"
TICKS_RANGE = "ticks is a whole number from 1 to 100000"


def event(number: int, status: str) -> bytes:
    return f'id: {number}\nevent: status\ndata: {{"order":1001,"status":"{status}"}}\n\n'.encode()


EVERY_STATUS = b"retry: 3000\n\n" + b"".join(
    event(number, status)
    for number, status in enumerate(("placed", "paid", "packed", "shipped", "delivered"), 1)
)


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(create_app(secret="test-secret")) as test_client:
        yield test_client


# ---- prices ------------------------------------------------------------------------------------


def test_prices_are_the_same_on_every_walk() -> None:
    assert list(itertools.islice(live.price_walk("ACME"), 6)) == ACME
    assert list(itertools.islice(live.price_walk("GLOBEX"), 6)) == GLOBEX
    for symbol, opening in live.SYMBOLS.items():
        prices = [opening, *itertools.islice(live.price_walk(symbol), 500)]
        assert prices[1:] == list(itertools.islice(live.price_walk(symbol), 500))
        for before, after in itertools.pairwise(prices):
            # Every tick moves the price, by at most 1%.
            assert 0 < abs(after - before) <= max(1, before // 100), symbol
            assert isinstance(after, int)


def test_a_price_never_walks_below_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "SYMBOLS", {"CENT": live.MIN_CENTS})
    prices = [live.MIN_CENTS, *itertools.islice(live.price_walk("CENT"), 500)]
    # The walk comes back to the floor, and from there every step down is turned up.
    assert min(prices) == live.MIN_CENTS
    assert prices.count(live.MIN_CENTS) == 1 + 19  # the opening price, then 19 returns
    after_floor = {
        after for before, after in itertools.pairwise(prices) if before == live.MIN_CENTS
    }
    assert after_floor == {live.MIN_CENTS + 1}


# ---- the order's event stream ----------------------------------------------------------------


def test_the_status_stream_is_every_status_in_order(client: TestClient) -> None:
    started = time.monotonic()
    reply = client.get(
        "/live/orders/1001/status?interval=0.05", headers={"Accept-Encoding": "gzip"}
    )
    elapsed = time.monotonic() - started
    assert reply.status_code == 200
    assert reply.content == EVERY_STATUS
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert reply.headers["cache-control"] == "no-cache"
    # The app's GZipMiddleware leaves event streams alone even when the client takes gzip:
    # a compressor would hold events back until its buffer fills.
    assert "content-encoding" not in reply.headers
    # Four gaps of 0.05 s between five events.
    assert 0.2 <= elapsed < 2


def test_each_event_is_sent_as_it_happens(client: TestClient) -> None:
    with client.stream(
        "GET", "/live/orders/1001/status?interval=1", headers={"Accept-Encoding": "gzip"}
    ) as reply:
        started = time.monotonic()
        seen = b""
        for chunk in reply.iter_raw():
            seen += chunk
            if b"placed" in seen:
                break
        elapsed = time.monotonic() - started
    # The first event arrives at once, long before the second is due.
    assert seen == b"retry: 3000\n\n" + event(1, "placed")
    assert elapsed < 0.8


def test_a_long_interval_is_filled_with_heartbeats(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "HEARTBEAT_SECONDS", 0.05)
    reply = client.get("/live/orders/1001/status?interval=0.12", headers={"Last-Event-ID": "3"})
    beat = b": keep-alive\n\n"
    assert reply.content == (
        b"retry: 3000\n\n" + event(4, "shipped") + beat + beat + event(5, "delivered")
    )


@pytest.mark.anyio
async def test_heartbeats_are_counted_from_the_interval() -> None:
    async def collect(interval: float, heartbeat: float) -> list[bytes]:
        return [part async for part in live.status_events(7, 3, interval, heartbeat)]

    beat = b": keep-alive\n\n"
    shipped = b'id: 4\nevent: status\ndata: {"order":7,"status":"shipped"}\n\n'
    delivered = b'id: 5\nevent: status\ndata: {"order":7,"status":"delivered"}\n\n'
    # An interval of exactly two heartbeats has one in between; a shorter one none.
    assert await collect(0.1, 0.05) == [b"retry: 3000\n\n", shipped, beat, delivered]
    assert await collect(0.05, 0.1) == [b"retry: 3000\n\n", shipped, delivered]


def test_a_reconnecting_client_resumes_after_its_last_event(client: TestClient) -> None:
    resumed = client.get("/live/orders/1001/status?interval=0.05", headers={"Last-Event-ID": "2"})
    assert resumed.content == (
        b"retry: 3000\n\n" + event(3, "packed") + event(4, "shipped") + event(5, "delivered")
    )
    # Delivered: 204 tells EventSource to stop reconnecting.
    done = client.get("/live/orders/1001/status", headers={"Last-Event-ID": "5"})
    assert (done.status_code, done.content) == (204, b"")
    # An id this stream never sent starts it over.
    junk = client.get("/live/orders/1001/status?interval=0.05", headers={"Last-Event-ID": "x"})
    assert junk.content == EVERY_STATUS


@pytest.mark.parametrize("interval", ["0", "0.01", "61", "nan", "inf", "soon", ""])
def test_an_interval_out_of_bounds_is_refused(client: TestClient, interval: str) -> None:
    reply = client.get(f"/live/orders/1001/status?interval={interval}")
    assert reply.status_code == 400
    assert reply.json() == {"error": "bad_query", "message": INTERVAL_RANGE}


def test_an_order_id_is_a_number(client: TestClient) -> None:
    assert client.get("/live/orders/abc/status").status_code == 404


# ---- the ticker --------------------------------------------------------------------------------


def closed(websocket: WebSocketTestSession) -> tuple[int, str]:
    message = websocket.receive()
    assert message["type"] == "websocket.close", message
    return message["code"], message.get("reason", "")


def test_the_ticker_streams_the_subscribed_prices_then_closes_with_1000(
    client: TestClient,
) -> None:
    with client.websocket_connect("/live/ticker?ticks=3&interval=0.05") as websocket:
        websocket.send_json({"subscribe": ["GLOBEX", "NOPE", "ACME", "GLOBEX"]})
        assert websocket.receive_json() == {
            "type": "subscribed",
            "symbols": ["GLOBEX", "ACME"],
            "unknown": ["NOPE"],
        }
        ticks = [websocket.receive_json() for _ in range(3)]
        assert closed(websocket) == (1000, "ticks done")
    assert ticks == [
        {"type": "tick", "seq": seq, "prices": {"GLOBEX": GLOBEX[seq - 1], "ACME": ACME[seq - 1]}}
        for seq in (1, 2, 3)
    ]


def test_the_ticker_answers_pings_between_ticks(client: TestClient) -> None:
    with client.websocket_connect("/live/ticker?ticks=2&interval=0.5") as websocket:
        websocket.send_json({"subscribe": ["ACME"]})
        assert websocket.receive_json()["type"] == "subscribed"
        websocket.send_json({"ping": 7})
        assert websocket.receive_json() == {"type": "pong", "ping": 7, "seq": 0}
        assert websocket.receive_json() == {"type": "tick", "seq": 1, "prices": {"ACME": ACME[0]}}
        websocket.send_json({"ping": "second"})
        assert websocket.receive_json() == {"type": "pong", "ping": "second", "seq": 1}
        websocket.send_json({"subscribe": ["GLOBEX"]})
        assert websocket.receive_json() == {
            "type": "error",
            "error": 'send {"ping": n}; already subscribed',
        }
        assert websocket.receive_json() == {"type": "tick", "seq": 2, "prices": {"ACME": ACME[1]}}
        assert closed(websocket) == (1000, "ticks done")


def test_without_ticks_the_ticker_runs_until_the_client_leaves(client: TestClient) -> None:
    with client.websocket_connect("/live/ticker?interval=0.05") as websocket:
        websocket.send_json({"subscribe": ["ACME"]})
        websocket.receive_json()
        seqs = [websocket.receive_json()["seq"] for _ in range(len(ACME))]
        websocket.close(1001)
    assert seqs == [1, 2, 3, 4, 5, 6]


SUBSCRIBE_FIRST = (1008, 'the first message is {"subscribe": ["SYMBOL", ...]}')
NOT_JSON = (1003, "text frames of JSON objects only")


@pytest.mark.parametrize(
    ("path", "first", "expected"),
    [
        ("/live/ticker", {"ping": 1}, SUBSCRIBE_FIRST),
        ("/live/ticker", {"subscribe": "ACME"}, SUBSCRIBE_FIRST),
        ("/live/ticker", {"subscribe": [1]}, SUBSCRIBE_FIRST),
        (
            "/live/ticker",
            {"subscribe": ["NOPE"]},
            (1008, "no known symbol; known: ACME GLOBEX INITECH UMBRELLA"),
        ),
        ("/live/ticker", ["ACME"], NOT_JSON),
        ("/live/ticker?ticks=0", {"subscribe": ["ACME"]}, (1008, TICKS_RANGE)),
        ("/live/ticker?ticks=-1", {"subscribe": ["ACME"]}, (1008, TICKS_RANGE)),
        ("/live/ticker?ticks=100001", {"subscribe": ["ACME"]}, (1008, TICKS_RANGE)),
        ("/live/ticker?interval=0", {"subscribe": ["ACME"]}, (1008, INTERVAL_RANGE)),
    ],
)
def test_the_ticker_closes_with_the_reason_on_a_bad_start(
    client: TestClient, path: str, first: object, expected: tuple[int, str]
) -> None:
    with client.websocket_connect(path) as websocket:
        websocket.send_json(first)
        assert closed(websocket) == expected


def test_the_ticker_takes_text_frames_only(client: TestClient) -> None:
    with client.websocket_connect("/live/ticker") as websocket:
        websocket.send_bytes(b'{"subscribe": ["ACME"]}')
        assert closed(websocket) == NOT_JSON
    with client.websocket_connect("/live/ticker") as websocket:
        websocket.send_text("not json")
        assert closed(websocket) == NOT_JSON


def test_a_client_that_never_subscribes_is_closed(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "SUBSCRIBE_TIMEOUT", 0.05)
    with client.websocket_connect("/live/ticker") as websocket:
        assert closed(websocket) == (1008, "subscribe first")


# ---- the page ----------------------------------------------------------------------------------


def test_the_home_page_links_to_the_live_page(client: TestClient) -> None:
    assert '<a href="/live">Live</a>' in client.get("/").text


def test_the_live_page_is_self_contained(client: TestClient) -> None:
    reply = client.get("/live", headers={"Accept-Encoding": "identity"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/html; charset=utf-8"
    page = reply.text
    assert "<title>Live</title>" in page
    # Nothing fetched from elsewhere: the one link is back to the shop, every stream is on
    # this host.
    assert re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page) == ["/"]
    assert re.findall(r"https?://", page) == []
    assert '"/live/ticker"' in page
    assert "new EventSource(sseUrl)" in page
    assert '"/live/orders/1001/status"' in page
    # What the browser test reads.
    for name in ("ws-state", "ws-close", "ticks", "subscribed", "pongs", "pong", "prices"):
        assert f'id="{name}"' in page, name
    for name in ("sse-state", "status", "statuses"):
        assert f'id="{name}"' in page, name
