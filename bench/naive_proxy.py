"""The Python peer: the reverse proxy most Python projects write. A starlette app, one shared
``httpx.AsyncClient`` with its default pool, the upstream response streamed back through a
``StreamingResponse``. Run by bench/run.py as ``uvicorn bench.naive_proxy:app`` with the
upstream in ``NAIVE_UPSTREAM``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with httpx.AsyncClient(base_url=os.environ["NAIVE_UPSTREAM"]) as client:
        app.state.client = client
        yield


async def proxy(request: Request) -> StreamingResponse:
    client: httpx.AsyncClient = request.app.state.client
    upstream = client.build_request(
        request.method,
        request.url.path,
        params=request.query_params,
        headers=[(k, v) for k, v in request.headers.items() if k not in HOP_BY_HOP],
        content=request.stream(),
    )
    response = await client.send(upstream, stream=True)
    return StreamingResponse(
        response.aiter_raw(),
        status_code=response.status_code,
        headers={k: v for k, v in response.headers.items() if k not in HOP_BY_HOP},
        background=BackgroundTask(response.aclose),
    )


app = Starlette(
    routes=[Route("/{path:path}", proxy, methods=["GET", "POST", "HEAD"])], lifespan=lifespan
)
