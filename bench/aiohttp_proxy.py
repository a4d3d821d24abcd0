"""The Python anchor: the fastest plain reverse proxy we know how to write in Python. An aiohttp
server and one pooled aiohttp ``ClientSession`` on uvloop, streaming both ways, adding no
headers of its own (no User-Agent, Accept or Accept-Encoding), never decompressing, following
no redirects. It routes nothing, counts nothing and checks nothing: what strangler does on top
of this is its features.

A WebSocket handshake (``Upgrade: websocket``) is relayed as messages: the upstream is dialled
with ``ws_connect`` and each message read on one side is sent on the other. Unlike strangler,
which relays the upgraded connection's bytes as they come, this re-frames every message (parses,
unmasks, masks again): the fastest WebSocket relay aiohttp offers, not the same work.

Run by bench/run.py as ``python -m bench.aiohttp_proxy PORT UPSTREAM [WS_UPSTREAM]``: WebSocket
handshakes go to ``WS_UPSTREAM`` (the benchmark's echo server), or to ``UPSTREAM`` without it.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    """Text and binary messages passed on as they are, until a close (aiohttp answers pings
    and closes itself)."""
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)


async def _websocket(
    request: web.Request, session: aiohttp.ClientSession, ws_upstream: str
) -> web.StreamResponse:
    # compress=0/False: no permessage-deflate on either side, as the other paths have none.
    try:
        upstream = await session.ws_connect(
            ws_upstream + str(request.rel_url), compress=0, max_msg_size=0
        )
    except (aiohttp.ClientError, OSError):
        return web.Response(status=502)
    async with upstream:
        client = web.WebSocketResponse(compress=False, max_msg_size=0)
        await client.prepare(request)
        pumps = [
            asyncio.ensure_future(_pump(client, upstream)),
            asyncio.ensure_future(_pump(upstream, client)),
        ]
        # Either side closing ends both: the other pump is stopped and both sockets closed.
        _, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for pump in pending:
            pump.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await client.close()
        return client


def app(upstream: str, ws_upstream: str | None = None) -> web.Application:
    application = web.Application()

    async def start(application: web.Application) -> None:
        application["session"] = aiohttp.ClientSession(
            base_url=upstream,
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def stop(application: web.Application) -> None:
        await application["session"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await _websocket(request, session, ws_upstream or upstream)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with session.request(
            request.method,
            request.rel_url,
            headers=headers,
            data=request.content if request.body_exists else None,
            allow_redirects=False,
        ) as upstream_response:
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={
                    k: v
                    for k, v in upstream_response.headers.items()
                    if k.lower() not in HOP_BY_HOP
                },
            )
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    application.on_startup.append(start)
    application.on_cleanup.append(stop)
    application.router.add_route("*", "/{path:.*}", proxy)
    return application


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2]
    ws_upstream = sys.argv[3] if len(sys.argv) > 3 else None
    # A client that goes away mid-write (wrk at the end of a run) is not news here.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    uvloop.install()
    web.run_app(
        app(upstream, ws_upstream), host="127.0.0.1", port=port, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
