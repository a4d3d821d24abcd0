"""The monolith's live feature: long-lived traffic a gateway in front of it must carry.

It owns three endpoints, wired into the app by :func:`routes`:

* ``GET /live``: one self-contained HTML page (inline CSS and JavaScript, nothing fetched from
  elsewhere) with a stock ticker over a WebSocket and an order's progress over server-sent
  events;
* ``WS /live/ticker``: the ticker. The client subscribes first (``{"subscribe": [...]}``), then
  gets a price update for its symbols every ``interval`` seconds and may ping at any time
  (``{"ping": n}``, answered with a pong); ``?ticks=N`` closes the socket with 1000 after N
  updates;
* ``GET /live/orders/{id}/status``: a ``text/event-stream`` of an order's statuses, placed to
  delivered, one every ``interval`` seconds, then the stream ends.

Both streams are deterministic (seeded price walks, a fixed list of statuses), so a test can
predict every byte. ``interval`` is a query parameter of both so tests run in moments; it is
bounded, so no client can make either stream spin or stall the loop.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

#: The ticker's symbols and their opening prices, in cents.
SYMBOLS: Mapping[str, int] = {"ACME": 12_500, "GLOBEX": 4_210, "INITECH": 880, "UMBRELLA": 31_000}
#: No price walks below this (a reflecting floor), so no symbol ever reaches 0.
MIN_CENTS = 100

TICK_INTERVAL = 0.5
STATUS_INTERVAL = 1.0
#: Bounds of ``?interval=``: below, a client could make a stream spin; above, it looks dead.
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0
#: Bounds of ``?ticks=``.
MAX_TICKS = 100_000
#: A client that has not subscribed by then is closed (1008): the socket would only idle.
SUBSCRIBE_TIMEOUT = 10.0

STATUSES = ("placed", "paid", "packed", "shipped", "delivered")
#: Sent as the stream's ``retry:``: how long EventSource waits before it reconnects, ms.
RETRY_MS = 3000
#: A comment line goes out when an interval is longer than this, so proxies in between (the
#: gateway's own stream idle timeout defaults to 60 s) see bytes and keep the stream open.
HEARTBEAT_SECONDS = 15.0


def routes() -> list[BaseRoute]:
    """The live feature's routes, for the monolith's Starlette app."""
    return [
        Route("/live", page),
        WebSocketRoute("/live/ticker", ticker),
        Route("/live/orders/{id:int}/status", order_status),
    ]


# ---- the ticker ------------------------------------------------------------------------------


def price_walk(symbol: str) -> Iterator[int]:
    """The symbol's prices in cents, one per tick (the first after one step from the opening
    price): a random walk of at most 1% a step, never 0, seeded by the symbol alone so every
    connection and every run sees the same prices. Every step moves the price, so a display
    changes on every tick."""
    # A str seed is hashed with SHA-512 (not hash()), so PYTHONHASHSEED does not change it.
    rng = random.Random(f"ticker:{symbol}")
    price = SYMBOLS[symbol]
    while True:
        step = rng.randint(1, max(1, price // 100)) * rng.choice((-1, 1))
        if price + step < MIN_CENTS:
            step = -step
        price += step
        yield price


async def ticker(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        interval = _interval(websocket.query_params, TICK_INTERVAL)
        ticks = _ticks(websocket.query_params)
    except ValueError as exc:
        # Accepted first so the client sees why: a refused handshake is a bare 403.
        await websocket.close(1008, str(exc))
        return
    try:
        symbols = await _subscription(websocket)
        if symbols is not None:
            await _stream_prices(websocket, symbols, interval, ticks)
    except WebSocketDisconnect:
        pass  # the client left: nothing to clean up


async def _subscription(websocket: WebSocket) -> list[str] | None:
    """The symbols of the client's first message, acknowledged; None once the socket is
    closed (the client left, or sent something else first)."""
    message: dict[str, Any] | None = None
    with anyio.move_on_after(SUBSCRIBE_TIMEOUT):
        message = await _receive(websocket)
    if message is None:
        await websocket.close(1008, "subscribe first")
        return None
    wanted = message.get("subscribe")
    if not isinstance(wanted, list) or not all(isinstance(name, str) for name in wanted):
        await websocket.close(1008, 'the first message is {"subscribe": ["SYMBOL", ...]}')
        return None
    symbols = [name for name in dict.fromkeys(wanted) if name in SYMBOLS]
    unknown = [name for name in dict.fromkeys(wanted) if name not in SYMBOLS]
    if not symbols:
        await websocket.close(1008, f"no known symbol; known: {' '.join(SYMBOLS)}")
        return None
    await websocket.send_json({"type": "subscribed", "symbols": symbols, "unknown": unknown})
    return symbols


async def _stream_prices(
    websocket: WebSocket, symbols: list[str], interval: float, ticks: int | None
) -> None:
    walks = {symbol: price_walk(symbol) for symbol in symbols}
    seq = 0
    # Ticks keep to a fixed schedule whatever the client sends in between.
    next_tick = anyio.current_time() + interval
    while ticks is None or seq < ticks:
        delay = next_tick - anyio.current_time()
        if delay > 0:
            message: dict[str, Any] | None = None
            # One task both reads and writes: a pong and a tick can never interleave on the
            # socket, and a receive cancelled by the timeout loses nothing (no frame yet).
            with anyio.move_on_after(delay):
                message = await _receive(websocket)
            if message is not None:
                await _answer(websocket, message, seq)
                continue
        seq += 1
        prices = {symbol: next(walk) for symbol, walk in walks.items()}
        await websocket.send_json({"type": "tick", "seq": seq, "prices": prices})
        next_tick += interval
    await websocket.close(1000, "ticks done")


async def _answer(websocket: WebSocket, message: dict[str, Any], seq: int) -> None:
    if "ping" in message:
        await websocket.send_json({"type": "pong", "ping": message["ping"], "seq": seq})
    else:
        await websocket.send_json(
            {"type": "error", "error": 'send {"ping": n}; already subscribed'}
        )


async def _receive(websocket: WebSocket) -> dict[str, Any]:
    """The client's next message as a JSON object; raises WebSocketDisconnect when it left.
    Anything but a JSON object in a text frame closes the socket (1003), which is then
    reported the same way."""
    message = await websocket.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    try:
        parsed = json.loads(text) if text is not None else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        await websocket.close(1003, "text frames of JSON objects only")
        raise WebSocketDisconnect(1003)
    return parsed


# ---- an order's status stream ----------------------------------------------------------------


async def order_status(request: Request) -> Response:
    try:
        interval = _interval(request.query_params, STATUS_INTERVAL)
    except ValueError as exc:
        return JSONResponse({"error": "bad_query", "message": str(exc)}, status_code=400)
    # EventSource reconnects after a stream ends, sending the last id it saw: resume after it,
    # and once the order is delivered answer 204, which tells EventSource to stop for good.
    start = _last_event_id(request.headers.get("last-event-id"))
    if start >= len(STATUSES):
        return Response(status_code=204, headers={"Cache-Control": "no-cache"})
    return StreamingResponse(
        status_events(request.path_params["id"], start, interval),
        media_type="text/event-stream",
        # no-cache: each stream is live. X-Accel-Buffering: nginx-style proxies would
        # otherwise hold the events back until their buffer fills.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def status_events(
    order_id: int, start: int, interval: float, heartbeat: float | None = None
) -> AsyncIterator[bytes]:
    """The stream's bytes: ``retry:``, then the statuses after the first ``start`` ones, one
    event every ``interval`` seconds (the first at once) with ``heartbeat`` comment lines in
    between. Each event's id is its status's position (1 is placed), so a resumed stream
    continues where the last one stopped."""
    heartbeat = HEARTBEAT_SECONDS if heartbeat is None else heartbeat
    # Counted, not timed, so the bytes do not depend on how punctually the loop wakes.
    beats = math.ceil(interval / heartbeat - 1e-9) - 1
    yield f"retry: {RETRY_MS}\n\n".encode()
    for index in range(start, len(STATUSES)):
        if index > start:
            for _ in range(beats):
                await anyio.sleep(heartbeat)
                yield b": keep-alive\n\n"
            await anyio.sleep(interval - beats * heartbeat)
        data = json.dumps({"order": order_id, "status": STATUSES[index]}, separators=(",", ":"))
        yield f"id: {index + 1}\nevent: status\ndata: {data}\n\n".encode()


def _last_event_id(value: str | None) -> int:
    try:
        return max(0, int(value)) if value is not None else 0
    except ValueError:
        return 0  # not an id this stream sent: start from the beginning


# ---- query parameters ------------------------------------------------------------------------


def _interval(query: Mapping[str, str], default: float) -> float:
    if "interval" not in query:
        return default
    try:
        value = float(query["interval"])
    except ValueError:
        value = math.nan
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:  # NaN fails both comparisons
        raise ValueError(f"interval is a number of seconds from {MIN_INTERVAL} to {MAX_INTERVAL}")
    return value


def _ticks(query: Mapping[str, str]) -> int | None:
    if "ticks" not in query:
        return None
    text = query["ticks"]
    if not text.isdigit() or not 1 <= int(text) <= MAX_TICKS:
        raise ValueError(f"ticks is a whole number from 1 to {MAX_TICKS}")
    return int(text)


# ---- the page ----------------------------------------------------------------------------------


async def page(request: Request) -> Response:
    return HTMLResponse(PAGE)


#: The page. Whatever arrives from the server is written with textContent, never as HTML.
#: Its own ``?interval=`` and ``?ticks=`` are passed on to both streams, so a test can ask
#: for a short run.
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Live</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 52rem;
       padding: 0 1rem; color: #222; }
section { border: 1px solid #ccc; border-radius: 6px; padding: 0 1rem 1rem; margin: 1rem 0; }
table { border-collapse: collapse; min-width: 24rem; }
th, td { padding: .2rem .8rem; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
.up { color: #067d17; } .down { color: #b3261e; }
code { background: #f4f4f4; padding: 0 .25rem; }
#statuses li.latest { font-weight: bold; }
</style></head>
<body>
<h1>Live</h1>
<p><a href="/">Back to the shop</a></p>

<section id="ticker">
<h2>Stock ticker</h2>
<p>WebSocket <code id="ws-url"></code>: <strong id="ws-state">connecting</strong>,
close code <span id="ws-close">none yet</span></p>
<p>Subscribed to <span id="subscribed">nothing yet</span>; ticks <span id="ticks">0</span>;
pongs <span id="pongs">0</span> (last ping answered <span id="pong">none</span>,
round trip <span id="rtt">?</span> ms)</p>
<table><thead><tr><th>Symbol</th><th>Price</th><th>Change</th></tr></thead>
<tbody id="prices"></tbody></table>
</section>

<section id="orders">
<h2>Order 1001</h2>
<p>Event stream <code id="sse-url"></code>: <strong id="sse-state">connecting</strong>,
latest status <span id="status">none yet</span></p>
<ol id="statuses"></ol>
</section>

<script>
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const SUBSCRIBE = ["ACME", "GLOBEX", "INITECH"];
  const PING_EVERY = 10;  // ticks between pings, after the first one on subscribing

  const params = new URLSearchParams(location.search);
  const pass = (names) => {
    const out = new URLSearchParams();
    for (const name of names) if (params.has(name)) out.set(name, params.get(name));
    const text = out.toString();
    return text ? "?" + text : "";
  };

  // ---- the ticker
  const wsUrl = (location.protocol === "https:" ? "wss://" : "ws://") + location.host +
    "/live/ticker" + pass(["interval", "ticks"]);
  $("ws-url").textContent = wsUrl;
  const rows = new Map();
  const sent = new Map();
  let ticks = 0, pongs = 0, pingNumber = 0;
  const socket = new WebSocket(wsUrl);

  const ping = () => {
    pingNumber += 1;
    sent.set(pingNumber, performance.now());
    socket.send(JSON.stringify({ping: pingNumber}));
  };
  const row = (symbol) => {
    let tr = rows.get(symbol);
    if (!tr) {
      tr = document.createElement("tr");
      tr.dataset.symbol = symbol;
      tr.dataset.changes = "0";
      for (const name of ["symbol", "price", "change"]) {
        const td = document.createElement("td");
        td.className = name;
        tr.appendChild(td);
      }
      tr.querySelector(".symbol").textContent = symbol;
      $("prices").appendChild(tr);
      rows.set(symbol, tr);
    }
    return tr;
  };

  socket.addEventListener("open", () => {
    $("ws-state").textContent = "open";
    socket.send(JSON.stringify({subscribe: SUBSCRIBE}));
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "subscribed") {
      $("subscribed").textContent = message.symbols.join(" ");
      message.symbols.forEach(row);
      ping();
    } else if (message.type === "tick") {
      ticks += 1;
      $("ticks").textContent = String(ticks);
      for (const [symbol, cents] of Object.entries(message.prices)) {
        const tr = row(symbol);
        const before = tr.dataset.cents === undefined ? null : Number(tr.dataset.cents);
        if (tr.dataset.first === undefined) tr.dataset.first = String(cents);
        tr.dataset.cents = String(cents);
        tr.querySelector(".price").textContent = (cents / 100).toFixed(2);
        const change = tr.querySelector(".change");
        if (before !== null && before !== cents) {
          tr.dataset.changes = String(Number(tr.dataset.changes) + 1);
          change.textContent = (cents > before ? "+" : "") + ((cents - before) / 100).toFixed(2);
          change.className = "change " + (cents > before ? "up" : "down");
        }
      }
      if (ticks % PING_EVERY === 0) ping();
    } else if (message.type === "pong") {
      pongs += 1;
      $("pongs").textContent = String(pongs);
      $("pong").textContent = String(message.ping);
      const at = sent.get(message.ping);
      if (at !== undefined) $("rtt").textContent = (performance.now() - at).toFixed(1);
    }
  });
  socket.addEventListener("close", (event) => {
    $("ws-state").textContent = "closed";
    $("ws-close").textContent = String(event.code);
  });

  // ---- the order's status stream
  const sseUrl = "/live/orders/1001/status" + pass(["interval"]);
  $("sse-url").textContent = sseUrl;
  const source = new EventSource(sseUrl);
  let delivered = false;
  source.addEventListener("open", () => { $("sse-state").textContent = "open"; });
  source.addEventListener("status", (event) => {
    const status = JSON.parse(event.data).status;
    const previous = $("statuses").querySelector("li.latest");
    if (previous) previous.classList.remove("latest");
    const li = document.createElement("li");
    li.dataset.status = status;
    li.dataset.id = event.lastEventId;
    li.className = "latest";
    li.textContent = status;
    $("statuses").appendChild(li);
    $("status").textContent = status;
    if (status === "delivered") {
      // The last status: no reconnect (the server would answer 204 anyway).
      delivered = true;
      source.close();
      $("sse-state").textContent = "done";
    }
  });
  source.addEventListener("error", () => {
    if (!delivered) {
      $("sse-state").textContent =
        source.readyState === EventSource.CLOSED ? "failed" : "reconnecting";
    }
  });
})();
</script>
</body></html>
"""
