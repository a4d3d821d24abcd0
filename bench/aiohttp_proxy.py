"""The Python anchor: the fastest plain reverse proxy we know how to write in Python. An aiohttp
server and one pooled aiohttp ``ClientSession`` on uvloop, streaming both ways, adding no
headers of its own (no User-Agent, Accept or Accept-Encoding), never decompressing, following
no redirects. It routes nothing, counts nothing and checks nothing: what strangler does on top
of this is its features.

Run by bench/run.py as ``python -m bench.aiohttp_proxy PORT UPSTREAM``.
"""

from __future__ import annotations

import logging
import sys

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


def app(upstream: str) -> web.Application:
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
    # A client that goes away mid-write (wrk at the end of a run) is not news here.
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    uvloop.install()
    web.run_app(app(upstream), host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
