"""Stickiness across processes and the sticky cookie, over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.splitting import Choice, Split
from tests.support import RawUpstream, answer, response, running_gateway, serve_process

pytestmark = pytest.mark.sockets

KEYS = [f"user-{i}" for i in range(150)]
SPLIT = Split("catalog", [Choice("catalog", 4000, True), Choice("monolith", 6000, False)])


@pytest.fixture
def upstreams() -> Iterator[dict[str, RawUpstream]]:
    started = {
        name: RawUpstream(answer(response(body=name.encode()))).start()
        for name in ("catalog", "monolith")
    }
    yield started
    for upstream in started.values():
        upstream.stop()


def write(tmp_path: Path, upstreams: dict[str, RawUpstream], sticky: str) -> Path:
    config = tmp_path / "routes.yaml"
    config.write_text(
        "version: 1\nbackends:\n"
        f"  catalog: {{url: '{upstreams['catalog'].url}'}}\n"
        f"  monolith: {{url: '{upstreams['monolith'].url}', kind: legacy}}\n"
        "routes:\n"
        "  - name: catalog\n"
        "    match: {path: /products}\n"
        "    split: {catalog: 40, monolith: 60}\n"
        f"    sticky: {sticky}\n"
    )
    return config


def test_every_process_sends_a_key_to_the_same_backend(
    tmp_path: Path, upstreams: dict[str, RawUpstream]
) -> None:
    config = write(tmp_path, upstreams, "{header: X-User-Id}")
    landed: list[dict[str, str]] = []
    for seed in ("1", "2"):
        # Different hash seeds: Python's own hash() would disagree between these processes.
        process, gateway, _ = serve_process(config, env={"PYTHONHASHSEED": seed})
        try:
            with httpx.Client(base_url=gateway) as client:
                landed.append(
                    {k: client.get("/products", headers={"X-User-Id": k}).text for k in KEYS}
                )
        finally:
            assert process.stop() == 0
    assert landed[0] == landed[1]
    assert landed[0] == {key: SPLIT.pick_for_key(key) for key in KEYS}
    assert set(landed[0].values()) == {"catalog", "monolith"}


def test_the_gateway_issues_the_sticky_cookie_and_honours_it(
    tmp_path: Path, upstreams: dict[str, RawUpstream]
) -> None:
    config = write(tmp_path, upstreams, "{cookie: sid, set: true}")
    with running_gateway(config) as (_, servers):
        base = servers.url("gateway")
        for _ in range(40):
            with httpx.Client(base_url=base) as browser:
                first = browser.get("/products")
                (line,) = first.headers.get_list("set-cookie")
                assert line.startswith("sid=")
                assert line.endswith("; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax")
                key = browser.cookies["sid"]
                assert len(key) == 32
                assert first.text == SPLIT.pick_for_key(key)
                # The cookie's key decided this first answer, and keeps deciding.
                again = {browser.get("/products").text for _ in range(5)}
                assert again == {first.text}
                assert browser.get("/products").headers.get_list("set-cookie") == []
        # A client that sends its own key is not given another one.
        kept = httpx.get(f"{base}/products", cookies={"sid": "mine"})
        assert kept.headers.get_list("set-cookie") == []
        assert kept.text == SPLIT.pick_for_key("mine")
