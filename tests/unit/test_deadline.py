"""A deadline (proxy/deadline.py) cancels its task when it expires, says so, and gives the
cancellation back; cancelled in time, it does nothing; someone else's cancellation is theirs."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadline import Deadline

pytestmark = pytest.mark.anyio


async def test_an_expired_deadline_cancels_the_task_and_can_be_absorbed() -> None:
    task = asyncio.current_task()
    assert task is not None
    deadline = Deadline(task, 0.01)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    assert deadline.expired
    deadline.absorb()
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # the task goes on, uncancelled


async def test_a_deadline_cancelled_in_time_never_fires() -> None:
    task = asyncio.current_task()
    assert task is not None
    deadline = Deadline(task, 0.01)
    deadline.cancel()
    await asyncio.sleep(0.05)
    assert not deadline.expired
    assert task.cancelling() == 0


async def test_another_cancellation_is_not_the_deadlines() -> None:
    async def work() -> bool:
        task = asyncio.current_task()
        assert task is not None
        deadline = Deadline(task, 5)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            deadline.cancel()
            return deadline.expired
        return True

    running = asyncio.get_running_loop().create_task(work())
    await asyncio.sleep(0.01)
    running.cancel()
    assert await running is False


async def test_zero_seconds_is_no_deadline() -> None:
    task = asyncio.current_task()
    assert task is not None
    deadline = Deadline(task, 0)
    await asyncio.sleep(0.02)
    assert not deadline.expired
