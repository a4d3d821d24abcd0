"""Request ids (proxy/requestid.py): UUID-shaped, unique within a process by construction, and
different between processes."""

from __future__ import annotations

import re
import subprocess
import sys

from proxy.requestid import RequestIds

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def test_ids_are_version_4_uuids_and_never_repeat_in_a_process() -> None:
    ids = RequestIds()
    made = [ids.next() for _ in range(100_000)]
    assert all(UUID4.match(i) for i in made[:1000] + made[-1000:])
    assert len(set(made)) == len(made)


def test_the_count_is_the_last_group_and_the_prefix_is_the_random_draw() -> None:
    ids = RequestIds(bytes(range(10)))
    assert ids.next() == "004080c1-0141-481c-8809-000000000001"
    assert ids.next() == "004080c1-0141-481c-8809-000000000002"
    # Every bit of the draw that fits is used: another draw, another prefix.
    assert RequestIds(b"\xff" * 10).next() == "ffffffff-ffff-4fff-bfff-000000000001"


def test_two_processes_make_different_ids() -> None:
    code = "from proxy.requestid import RequestIds; print(RequestIds().next())"
    first, second = (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    )
    assert UUID4.match(first)
    assert UUID4.match(second)
    assert first[:24] != second[:24]
    assert first.endswith("000000000001")
    assert second.endswith("000000000001")
