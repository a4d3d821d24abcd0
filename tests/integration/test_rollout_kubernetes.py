"""The rollout controller writing a Kubernetes ConfigMap (docs/rollout.md, "In Kubernetes"),
without a cluster: a stand-in API server on a loopback port that keeps one ConfigMap and does
what the real one does with ``resourceVersion`` (a PUT carrying an old one is 409 Conflict),
`strangler rollout --kubernetes-configmap` as a subprocess, and a real gateway whose admin
/metrics is the metric source."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support import ROOT, RawUpstream, ThreadedServers, response, serve_process

pytestmark = pytest.mark.sockets

STRANGLER = [sys.executable, "-m", "proxy"]
PATH = "/api/v1/namespaces/shop/configmaps/strangler-routes"

TABLE = """\
version: 1
backends:
  monolith: {{url: "{legacy}", kind: legacy}}
  catalog: {{url: "{new}"}}
routes:
  - name: catalog
    match: {{ path: /products }}
    split: {{ catalog: 50, monolith: 50 }}   # written by strangler rollout
    rollout: {{ to: catalog, steps: [50, 100], every: 1s, min_requests: 5 }}
"""


@dataclass
class ApiServer:
    """One ConfigMap, its resourceVersion, and the requests made of it."""

    data: dict[str, str]
    version: int = 1
    requests: list[tuple[str, int]] = field(default_factory=list)
    #: Someone else's change, made right after the next GET is answered.
    meddle: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "strangler-routes", "namespace": "shop",
                         "resourceVersion": str(self.version)},
            "data": dict(self.data),
        }  # fmt: skip

    async def get(self, request: Request) -> Response:
        self.requests.append(("GET", self.version))
        answer = JSONResponse(self.document())
        if self.meddle:
            self.meddle = False
            self.data["other-key"] = "someone's kubectl apply"
            self.version += 1
        return answer

    async def put(self, request: Request) -> Response:
        document = json.loads(await request.body())
        sent = int(document["metadata"]["resourceVersion"])
        self.requests.append(("PUT", sent))
        if sent != self.version:
            return JSONResponse({"kind": "Status", "reason": "Conflict", "code": 409}, 409)
        self.data = document["data"]
        self.version += 1
        return JSONResponse(self.document())

    def app(self) -> Starlette:
        return Starlette(
            routes=[Route(PATH, self.get, methods=["GET"]), Route(PATH, self.put, methods=["PUT"])]
        )


@dataclass
class Cluster:
    api: ApiServer
    url: str
    gateway: str
    admin: str

    def rollout(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *STRANGLER, "rollout", "--kubernetes-configmap", "shop/strangler-routes",
                "--kubernetes-api", self.url, "--admin", self.admin, "--once",
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    def traffic(self) -> None:
        for _ in range(40):
            assert httpx.get(f"{self.gateway}/products", timeout=10).status_code == 200
        time.sleep(1.1)  # past the step's `every`


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    legacy = RawUpstream(lambda exchange: exchange.send(response(body=b"legacy"))).start()
    new = RawUpstream(lambda exchange: exchange.send(response(body=b"new"))).start()
    text = TABLE.format(legacy=legacy.url, new=new.url)
    # The gateway's copy of the table: what kubelet mounts from the ConfigMap.
    mounted = tmp_path / "routes.yaml"
    mounted.write_text(text)
    api = ApiServer({"routes.yaml": text})
    servers = ThreadedServers({"api": api.app()}).start()
    process, gateway, admin = serve_process(mounted, "--access-log", "off")
    try:
        yield Cluster(api, servers.url("api"), gateway, admin)
    finally:
        process.stop()
        servers.stop()
        legacy.stop()
        new.stop()


def test_promotion_is_one_put_of_the_table_and_its_state_at_the_version_read(
    cluster: Cluster,
) -> None:
    api = cluster.api
    original = api.data["routes.yaml"]
    first = cluster.rollout()
    assert first.returncode == 0, first.stderr
    assert api.requests == [("GET", 1), ("PUT", 1)]
    state = json.loads(api.data["routes.yaml.rollout.json"])
    assert state["routes"]["catalog"]["weight"] == 5000
    assert api.data["routes.yaml"] == original  # a hold writes the state only
    cluster.traffic()
    second = cluster.rollout()
    (decision,) = [json.loads(line) for line in second.stdout.splitlines()]
    assert decision["action"] == "promote", decision
    assert api.data["routes.yaml"] == original.replace(
        "split: { catalog: 50, monolith: 50 }", "split: { catalog: 100, monolith: 0 }"
    )
    assert api.requests[-2:] == [("GET", 2), ("PUT", 2)]
    assert api.version == 3


def test_a_change_made_meanwhile_is_a_conflict_and_nothing_is_written(cluster: Cluster) -> None:
    api = cluster.api
    cluster.rollout()
    cluster.traffic()
    api.meddle = True
    refused = cluster.rollout()
    assert refused.returncode == 0, refused.stderr
    assert "changed while the round judged it" in refused.stderr
    (said,) = [json.loads(line) for line in refused.stdout.splitlines()]
    assert (said["action"], said["written"]) == ("promote", False)
    assert api.requests[-2:] == [("GET", 2), ("PUT", 2)]  # refused: the map is at 3 by then
    assert "catalog: 50, monolith: 50" in api.data["routes.yaml"]
    # The next round judges the map as it is now, and its write keeps the other change.
    again = cluster.rollout()
    assert [json.loads(line)["action"] for line in again.stdout.splitlines()] == ["promote"]
    assert "catalog: 100, monolith: 0" in api.data["routes.yaml"]
    assert api.data["other-key"] == "someone's kubectl apply"
