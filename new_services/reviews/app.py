"""Product reviews, migrated to an HTTP service that has its own URL layout.

The monolith serves a product's reviews at ``GET /products/{id}/reviews``; this service, written
for its own API, serves them at ``GET /reviews/by-product/{id}`` and knows nothing of the
monolith's paths. The gateway's route ``reviews`` (config/routes.yaml) matches the monolith's
path and rewrites it (docs/routing.md, "Rewriting paths"), so clients keep their URLs. The
answer is the monolith's, byte for byte, from the same seed data (legacy_monolith.export).

Unlike the function services it is a ``url`` backend: it runs as its own server
(``python -m new_services.reviews --port 8082``, or as a listener of ``strangler demo``).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from new_services.common.storage import seed

#: The path this service serves a product's reviews at (the gateway's rewrite targets it).
REVIEWS_PATH = "/reviews/by-product/{id}"


def summary(pid: int, reviews: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer's body, field for field as the monolith builds it."""
    ratings = [review["rating"] for review in reviews]
    return {
        "product_id": pid,
        "count": len(reviews),
        "average_rating": round(sum(ratings) / len(ratings), 2) if ratings else None,
        "reviews": reviews,
    }


def create_app() -> Starlette:
    reviews: dict[str, list[dict[str, Any]]] = seed()["reviews"]

    async def by_product(request: Request) -> Response:
        # Read as the monolith reads it (int(), so "07" is product 7).
        try:
            pid = int(request.path_params["id"])
        except ValueError:
            pid = -1
        found = reviews.get(str(pid))
        if found is None:
            return JSONResponse(
                {"error": "not_found", "message": "no such product"}, status_code=404
            )
        return JSONResponse(summary(pid, found))

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    return Starlette(
        routes=[Route(REVIEWS_PATH, by_product), Route("/healthz", healthz)],
        # As the monolith: large JSON answers gzipped for clients that accept it.
        middleware=[Middleware(GZipMiddleware, minimum_size=500)],
    )
