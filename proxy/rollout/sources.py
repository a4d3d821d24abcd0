"""Where the rollout controller reads what happened in a step (docs/rollout.md, "Metric
sources"): every replica's counters, from Prometheus or from each gateway's admin ``/metrics``.

Both give a :class:`~proxy.rollout.judge.Window` for a route's step, from the same three
families: ``strangler_requests_total`` (requests and 5xx by backend),
``strangler_request_duration_seconds_bucket`` (latency), ``strangler_shadow_requests_total``
(the shadow's comparisons).

- :class:`PrometheusSource` asks ``increase(...[AGE])`` over the step's age, summed over every
  replica Prometheus scrapes.
- :class:`AdminSource` scrapes each gateway given and keeps every series' running total: a
  counter that went down was reset (a gateway restarted), and its new value is all growth, as
  Prometheus's ``increase`` counts it. The totals when a step began are its baseline; the
  window is what grew since. The totals live in the controller's state, so a restarted
  controller goes on from them (a reset while no controller ran is counted from 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import httpx
from prometheus_client.parser import text_string_to_metric_families

from proxy.rollout.judge import Window

#: A route's counts, flat: ``new_requests``, ``new_errors``, ``legacy_requests``,
#: ``legacy_errors``, ``shadow_match``, ``shadow_mismatch``, ``new_le|BOUND``,
#: ``legacy_le|BOUND``.
Flat = dict[str, float]
_REQUESTS = "strangler_requests_total"
_BUCKETS = "strangler_request_duration_seconds_bucket"
_SHADOW = "strangler_shadow_requests_total"


class SourceError(Exception):
    """The counts cannot be read (a replica or Prometheus did not answer): no decision now."""


@dataclass(frozen=True, slots=True)
class RouteView:
    """What the sources need to know of a route with a rollout."""

    name: str
    #: The new backend being ramped.
    to: str
    #: The other backends of its split.
    legacy: frozenset[str]


class Source(Protocol):
    def restore(self, totals: dict[str, list[float]]) -> None:
        """Go on from the running totals a state kept (the admin source's; the others keep
        none)."""

    def refresh(self) -> None:
        """Read what is there now (before a round's decisions)."""

    def baseline(self, view: RouteView) -> Flat:
        """The route's counts now, recorded when a step begins."""

    def window(self, view: RouteView, age: float, baseline: Flat) -> Window:
        """What happened in the step: ``age`` seconds since it began at ``baseline``."""


def add_sample(
    flat: Flat, view: RouteView, name: str, labels: Mapping[str, str], value: float
) -> None:
    """Add one sample (a total, or an increase) of the route's families to ``flat``."""
    backend = labels.get("backend", "")
    if name == _SHADOW:
        if backend == view.to and labels.get("result") in ("match", "mismatch"):
            key = f"shadow_{labels['result']}"
            flat[key] = flat.get(key, 0.0) + value
        return
    side = "new" if backend == view.to else "legacy" if backend in view.legacy else None
    if side is None:
        return
    if name == _REQUESTS:
        flat[f"{side}_requests"] = flat.get(f"{side}_requests", 0.0) + value
        if labels.get("code", "").startswith("5"):
            flat[f"{side}_errors"] = flat.get(f"{side}_errors", 0.0) + value
    elif name == _BUCKETS:
        key = f"{side}_le|{labels['le']}"
        flat[key] = flat.get(key, 0.0) + value


def to_window(flat: Flat) -> Window:
    def buckets(side: str) -> dict[float, float]:
        prefix = f"{side}_le|"
        return {
            float(key[len(prefix) :]): max(0.0, value)
            for key, value in flat.items()
            if key.startswith(prefix)
        }

    return Window(
        new_requests=flat.get("new_requests", 0.0),
        new_errors=flat.get("new_errors", 0.0),
        legacy_requests=flat.get("legacy_requests", 0.0),
        legacy_errors=flat.get("legacy_errors", 0.0),
        new_buckets=buckets("new"),
        legacy_buckets=buckets("legacy"),
        shadow_match=flat.get("shadow_match", 0.0),
        shadow_mismatch=flat.get("shadow_mismatch", 0.0),
    )


class AdminSource:
    """Each gateway's admin ``/metrics``, every series' running total kept in ``totals``
    (series key -> [the value last read, the running total])."""

    def __init__(
        self, urls: Iterable[str], client: httpx.Client, totals: dict[str, list[float]]
    ) -> None:
        self._urls = [url.rstrip("/") for url in urls]
        self._client = client
        self.totals = totals

    def restore(self, totals: dict[str, list[float]]) -> None:
        self.totals = totals

    def refresh(self) -> None:
        for url in self._urls:
            try:
                reply = self._client.get(f"{url}/metrics")
                reply.raise_for_status()
            except httpx.HTTPError as exc:
                raise SourceError(f"cannot read {url}/metrics: {exc}") from None
            # A series that appears after the replica's first scrape was 0 before it (a status
            # counted for the first time); at the first scrape, what it had counted is history.
            known = _series_key(url, "", {})
            first = known not in self.totals
            self.totals[known] = [0.0, 0.0]
            for family in text_string_to_metric_families(reply.text):
                for sample in family.samples:
                    if sample.name not in (_REQUESTS, _BUCKETS, _SHADOW):
                        continue
                    key = _series_key(url, sample.name, sample.labels)
                    entry = self.totals.get(key)
                    value = float(sample.value)
                    if entry is None:
                        self.totals[key] = [value, 0.0 if first else value]
                        continue
                    last, total = entry
                    # A counter that went down restarted from 0: all of it is growth.
                    entry[0], entry[1] = value, total + (value - last if value >= last else value)

    def baseline(self, view: RouteView) -> Flat:
        flat: Flat = {}
        for key, (_, total) in self.totals.items():
            _, name, labels = _parse_key(key)
            if labels.get("route") == view.name:
                add_sample(flat, view, name, labels, total)
        return flat

    def window(self, view: RouteView, age: float, baseline: Flat) -> Window:
        now = self.baseline(view)
        return to_window({key: now.get(key, 0.0) - baseline.get(key, 0.0) for key in now})


class PrometheusSource:
    """PromQL over every replica Prometheus scrapes: ``increase()`` over the step's age."""

    def __init__(self, url: str, client: httpx.Client) -> None:
        self._url = url.rstrip("/")
        self._client = client

    def restore(self, totals: dict[str, list[float]]) -> None:
        """Prometheus keeps the totals itself."""

    def refresh(self) -> None:
        """Nothing to read ahead: each window is its own query."""

    def baseline(self, view: RouteView) -> Flat:
        return {}

    def window(self, view: RouteView, age: float, baseline: Flat) -> Window:
        # Prometheus needs a range of at least a scrape interval or two; a younger step is
        # judged on nothing, so it holds for lack of requests.
        span = f"{max(1, math.ceil(age))}s"
        route = _quoted(view.name)
        flat: Flat = {}
        queries = (
            (_REQUESTS, f"sum by (backend, code) (increase({_REQUESTS}{{route={route}}}[{span}]))"),
            (_BUCKETS, f"sum by (backend, le) (increase({_BUCKETS}{{route={route}}}[{span}]))"),
            (
                _SHADOW,
                f"sum by (backend, result) (increase({_SHADOW}{{route={route}}}[{span}]))",
            ),
        )
        for name, query in queries:
            for labels, value in self._query(query):
                add_sample(flat, view, name, labels, value)
        return to_window(flat)

    def _query(self, query: str) -> list[tuple[dict[str, str], float]]:
        try:
            reply = self._client.get(f"{self._url}/api/v1/query", params={"query": query})
            reply.raise_for_status()
            body = reply.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceError(f"Prometheus at {self._url}: {exc}") from None
        if body.get("status") != "success":
            raise SourceError(f"Prometheus at {self._url}: {body.get('error', body)}")
        results = []
        for item in body["data"]["result"]:
            value = float(item["value"][1])
            if not math.isnan(value):
                results.append((item["metric"], value))
        return results


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _series_key(url: str, name: str, labels: Mapping[str, str]) -> str:
    pairs = "\x1e".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return f"{url}\x1f{name}\x1f{pairs}"


def _parse_key(key: str) -> tuple[str, str, dict[str, str]]:
    url, name, pairs = key.split("\x1f")
    labels = dict(pair.split("=", 1) for pair in pairs.split("\x1e") if pair)
    return url, name, labels
