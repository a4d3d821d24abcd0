"""Where the controller reads a step's counts (proxy/rollout/sources.py): two replicas' admin
``/metrics`` summed, a counter reset (a restarted gateway) counted as Prometheus's
``increase`` counts it, a series born mid-step counted whole; and the PromQL asked of
Prometheus."""

from __future__ import annotations

import httpx
import pytest

from proxy.rollout.sources import AdminSource, PrometheusSource, RouteView, SourceError

VIEW = RouteView("catalog", "catalog", frozenset({"monolith"}))


def sample(name: str, value: float, **labels: str) -> str:
    pairs = ",".join(f'{key}="{label}"' for key, label in labels.items())
    return f"{name}{{{pairs}}} {value}"


def exposition(new_ok: float, new_5xx: float | None, legacy: float, buckets: float) -> str:
    requests = "strangler_requests_total"
    new = {"route": "catalog", "backend": "catalog", "kind": "new"}
    lines = [
        f"# TYPE {requests} counter",
        sample(requests, new_ok, **new, method="GET", code="200"),
        sample(requests, legacy, **{**new, "backend": "monolith", "kind": "legacy"}, code="200"),
        sample(requests, 99, **{**new, "route": "other"}, method="GET", code="500"),
        "# TYPE strangler_request_duration_seconds histogram",
        sample("strangler_request_duration_seconds_bucket", buckets, **new, le="0.1"),
        sample("strangler_request_duration_seconds_bucket", buckets, **new, le="+Inf"),
        "# TYPE strangler_shadow_requests_total counter",
        sample(
            "strangler_shadow_requests_total", 5, route="catalog", backend="catalog", result="match"
        ),
    ]
    if new_5xx is not None:
        lines.insert(3, sample(requests, new_5xx, **new, method="GET", code="503"))
    return "\n".join(lines) + "\n"


class Replicas:
    def __init__(self) -> None:
        self.pages: dict[str, str] = {}

    def handler(self, request: httpx.Request) -> httpx.Response:
        page = self.pages.get(request.url.host)
        if page is None:
            return httpx.Response(503)
        return httpx.Response(200, text=page)


def test_two_replicas_are_summed_and_a_reset_counts_as_growth() -> None:
    replicas = Replicas()
    client = httpx.Client(transport=httpx.MockTransport(replicas.handler))
    source = AdminSource(["http://a:9901", "http://b:9901/"], client, {})
    replicas.pages = {"a": exposition(100, None, 900, 100), "b": exposition(40, 2, 400, 42)}
    source.refresh()
    baseline = source.baseline(VIEW)
    # Counts before the controller first saw a replica are history, not the step's.
    assert baseline.get("new_requests", 0.0) == 0.0
    # a grows by 50 (and its first 503 appears: 3 of them), b restarts and has counted 10 since.
    replicas.pages = {"a": exposition(150, 3, 1000, 153), "b": exposition(10, 0, 90, 10)}
    source.refresh()
    window = source.window(VIEW, 60.0, baseline)
    assert window.new_requests == 50 + 3 + 10
    assert window.new_errors == 3
    assert window.legacy_requests == 100 + 90
    assert window.new_buckets == {0.1: 53 + 10, float("inf"): 53 + 10}
    assert window.shadow_match == 0  # 5 on each replica before and after: none in the step
    assert source.window(VIEW, 60.0, baseline).new_requests == 63  # reading again changes nothing


def test_a_replica_that_does_not_answer_means_no_decision() -> None:
    replicas = Replicas()
    client = httpx.Client(transport=httpx.MockTransport(replicas.handler))
    replicas.pages = {"a": exposition(1, None, 1, 1)}
    source = AdminSource(["http://a:9901", "http://b:9901"], client, {})
    with pytest.raises(SourceError, match="cannot read http://b:9901/metrics"):
        source.refresh()


def test_prometheus_is_asked_for_increases_over_the_steps_age() -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        query = request.url.params["query"]
        asked.append(query)
        if "strangler_requests_total" in query:
            result = [
                {"metric": {"backend": "catalog", "code": "200"}, "value": [0, "97.5"]},
                {"metric": {"backend": "catalog", "code": "503"}, "value": [0, "2.5"]},
                {"metric": {"backend": "monolith", "code": "200"}, "value": [0, "400"]},
                {"metric": {"backend": "monolith", "code": "502"}, "value": [0, "NaN"]},
            ]
        else:
            result = []
        return httpx.Response(200, json={"status": "success", "data": {"result": result}})

    source = PrometheusSource(
        "http://prom:9090/", httpx.Client(transport=httpx.MockTransport(answer))
    )
    window = source.window(VIEW, 1799.2, {})
    assert (window.new_requests, window.new_errors, window.legacy_requests) == (100.0, 2.5, 400.0)
    assert asked == [
        f'sum by (backend, {by}) (increase(strangler_{name}{{route="catalog"}}[1800s]))'
        for by, name in (
            ("code", "requests_total"),
            ("le", "request_duration_seconds_bucket"),
            ("result", "shadow_requests_total"),
        )
    ]
