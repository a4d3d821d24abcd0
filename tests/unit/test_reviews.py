"""The reviews service (new_services/reviews) in-process: the monolith's answers, under the
service's own paths."""

from __future__ import annotations

import httpx
import pytest

from legacy_monolith import data
from legacy_monolith.app import create_app as create_monolith
from new_services.reviews.app import REVIEWS_PATH, create_app

pytestmark = pytest.mark.anyio

#: Every product, the ids just outside the seed, and ids the monolith reads with int().
IDS = [str(pid) for pid in range(0, data.PRODUCT_COUNT + 2)] + ["07", "-1", "x", "1.5", "%207"]


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")  # type: ignore[arg-type]


@pytest.mark.parametrize("pid", IDS)
async def test_each_answer_is_the_monolith_s_byte_for_byte(pid: str) -> None:
    async with client(create_app()) as service, client(create_monolith()) as monolith:
        for encoding in ("identity", "gzip"):
            headers = {"Accept-Encoding": encoding}
            new = await service.get(REVIEWS_PATH.format(id=pid), headers=headers)
            old = await monolith.get(f"/products/{pid}/reviews", headers=headers)
            assert (new.status_code, new.content) == (old.status_code, old.content)
            assert new.headers == old.headers


async def test_reviews_of_a_product() -> None:
    async with client(create_app()) as service:
        reply = await service.get("/reviews/by-product/7")
    assert reply.status_code == 200
    assert reply.content == (
        b'{"product_id":7,"count":3,"average_rating":2.33,"reviews":['
        b'{"id":70,"author":"bob","rating":2,"text":"Arrived late, works fine."},'
        b'{"id":71,"author":"carol","rating":4,"text":"Does what it says."},'
        b'{"id":72,"author":"alice","rating":1,"text":"Would buy again."}]}'
    )


async def test_a_product_without_reviews_has_no_average() -> None:
    async with client(create_app()) as service:
        reply = await service.get("/reviews/by-product/4")
    assert reply.json() == {"product_id": 4, "count": 0, "average_rating": None, "reviews": []}


async def test_the_monolith_s_paths_are_unknown_here() -> None:
    async with client(create_app()) as service:
        assert (await service.get("/products/7/reviews")).status_code == 404


def test_seed_reviews_are_deterministic_and_within_bounds() -> None:
    reviews = data.seed_reviews()
    assert reviews == data.seed_reviews()
    assert sorted(reviews) == list(range(1, data.PRODUCT_COUNT + 1))
    assert {len(listed) for listed in reviews.values()} == {0, 1, 2, 3}
    ratings = {review["rating"] for listed in reviews.values() for review in listed}
    assert ratings <= set(range(1, 6))
    ids = [review["id"] for listed in reviews.values() for review in listed]
    assert len(ids) == len(set(ids))
