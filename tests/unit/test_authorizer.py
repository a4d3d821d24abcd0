"""An authorizer at run time (proxy/authorizer.py) with a stand-in for the call: the identity a
request carries, what the cache may answer, single flight, and a property: two callers with
different identities never get each other's answer."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.asgi import RawHeaders
from proxy.authorizer import Allow, Authorizer, Deny, Outcome
from proxy.backends.base import ProxyRequest
from proxy.errors import AuthorizerUnavailable
from proxy.table.model import Authorizer as Spec
from proxy.table.model import IdentitySource, Location


def spec(ttl: float = 60.0) -> Spec:
    return Spec(
        name="session",
        url="http://127.0.0.1:9/whoami",
        function=None,
        lambda_url=None,
        identity=(IdentitySource("header", "authorization"), IdentitySource("cookie", "sid")),
        ttl=ttl,
        timeout=2.0,
        forward_headers=(b"authorization", b"cookie"),
        upstream_headers=(b"x-user",),
        context_headers=(),
        location=Location("t.yaml", 1, 1),
    )


class Caller:
    """Answers with the identity it was really sent (the client's own headers), after a
    pause, so that concurrent requests overlap."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.calls = 0
        self.delay = delay
        self.fail = fail

    async def ask(self, request: ProxyRequest, client: RawHeaders, identity: list[str]) -> Outcome:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail:
            raise AuthorizerUnavailable("down")
        who = [(n.decode(), v.decode("latin-1")) for n, v in client]
        return Allow(((b"x-user", repr(who).encode()),), {"who": who})

    async def aclose(self) -> None:
        pass


def authorizer(caller: Caller, ttl: float = 60.0) -> Authorizer:
    made = Authorizer(spec(ttl), backend=None)  # type: ignore[arg-type]
    made._caller = caller  # type: ignore[assignment]
    return made


def request() -> ProxyRequest:
    task = asyncio.current_task()
    assert task is not None
    return ProxyRequest(
        "GET", "/cart", b"", [], None, "rid", "cart", "ANY /cart", {}, "127.0.0.1", None,
        "HTTP/1.1", task,
    )  # fmt: skip


def headers(authorization: list[str], sids: list[str], other: str = "") -> RawHeaders:
    out: RawHeaders = [(b"authorization", v.encode("latin-1")) for v in authorization]
    if sids:
        out.append((b"cookie", "; ".join(f"sid={v}" for v in sids).encode("latin-1")))
    if other:
        out.append((b"cookie", b"theme=" + other.encode("latin-1")))
    return out


def test_the_identity_is_every_value_of_every_source_in_order() -> None:
    made = authorizer(Caller())
    both = headers(["Bearer a", "Bearer b"], ["1", "2"], other="dark")
    assert made.identity_of(both) == (("Bearer a", "Bearer b"), ("1", "2"))
    assert made.identity_of(headers(["Bearer a"], [])) is None
    assert made.identity_of(headers([], ["1"])) is None


def test_no_identity_is_unauthenticated_and_nothing_is_called() -> None:
    caller = Caller()

    async def main() -> tuple[str, Outcome | None]:
        return await authorizer(caller).decide(request(), headers([], ["1"]))

    assert asyncio.run(main()) == ("unauthenticated", None)
    assert caller.calls == 0


def test_a_failure_is_not_cached_and_is_raised_to_every_waiter() -> None:
    caller = Caller(delay=0.01, fail=True)
    made = authorizer(caller)

    async def main() -> list[Any]:
        client = headers(["Bearer a"], ["1"])
        return await asyncio.gather(
            *(made.decide(request(), client) for _ in range(5)), return_exceptions=True
        )

    assert all(isinstance(r, AuthorizerUnavailable) for r in asyncio.run(main()))
    assert caller.calls == 1
    assert all(isinstance(r, AuthorizerUnavailable) for r in asyncio.run(main()))
    assert caller.calls == 2


def test_a_denial_other_than_401_or_403_is_not_cached() -> None:
    assert Deny(401).cacheable
    assert Deny(403).cacheable
    assert not Deny(302).cacheable
    assert not Deny(500).cacheable


def test_a_call_outlives_the_client_that_started_it_and_its_answer_is_cached() -> None:
    caller = Caller(delay=0.05)
    made = authorizer(caller)

    async def main() -> tuple[str, Outcome | None]:
        client = headers(["Bearer a"], ["1"])
        first = asyncio.ensure_future(made.decide(request(), client))
        await asyncio.sleep(0.01)
        first.cancel()  # the client went away mid-call
        await asyncio.sleep(0.1)
        return await made.decide(request(), client)

    result, outcome = asyncio.run(main())
    assert result == "cached"
    assert isinstance(outcome, Allow)
    assert caller.calls == 1


#: Values that a careless key would confuse: joined with ", " or ",", several values are one.
value = st.sampled_from(["a", "b", "a, b", "a,b", "b, a", 'a"', "a=b", "x y"])
#: Identities that differ only in how their values are split, or in one source.
lookalikes = st.sampled_from(
    [
        (["a, b"], ["s"]),
        (["a", "b"], ["s"]),
        (["a,b"], ["s"]),
        (["b", "a"], ["s"]),
        (["a"], ["s, t"]),
        (["a"], ["s", "t"]),
        (["a"], ["s"]),
        (["s"], ["a"]),
    ]
)
identities = lookalikes | st.tuples(
    st.lists(value, min_size=1, max_size=2), st.lists(value, min_size=1, max_size=2)
)


@settings(max_examples=200, deadline=None)
@given(st.lists(identities, min_size=1, max_size=12), st.booleans())
def test_two_different_identities_never_share_an_answer(
    requests: list[tuple[list[str], list[str]]], concurrent: bool
) -> None:
    """Whatever the values (separators inside them, several values of one header or cookie),
    in sequence or all at once: each request's answer is the one made for its own identity."""
    caller = Caller(delay=0.001 if concurrent else 0.0)
    made = authorizer(caller)

    async def main() -> list[tuple[str, Outcome | None]]:
        clients = [headers(list(auth), list(sids)) for auth, sids in requests]
        if concurrent:
            return list(await asyncio.gather(*(made.decide(request(), c) for c in clients)))
        return [await made.decide(request(), c) for c in clients]

    answers = asyncio.run(main())
    for (auth, sids), (_, outcome) in zip(requests, answers, strict=True):
        assert isinstance(outcome, Allow)
        assert outcome.context is not None
        mine = [(n.decode(), v.decode("latin-1")) for n, v in headers(list(auth), list(sids))]
        assert outcome.context["who"] == mine
    distinct = {made.identity_of(headers(list(a), list(s))) for a, s in requests}
    assert caller.calls == len(distinct)
