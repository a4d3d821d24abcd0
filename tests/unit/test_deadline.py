"""A deadline (proxy/deadline.py) cancels its task when it expires, says so, and gives the
cancellation back; cancelled in time, it does nothing; someone else's cancellation is theirs."""

from __future__ import annotations

import asyncio

import pytest

from proxy.deadline import Deadline, IdleDeadline

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


async def test_an_idle_deadline_fires_only_after_its_seconds_without_a_touch() -> None:
    task = asyncio.current_task()
    assert task is not None
    idle = IdleDeadline(task, 0.1)
    for _ in range(6):  # 0.3 s in all, touched every 0.03 s: never 0.1 s without a touch
        await asyncio.sleep(0.03)
        idle.touch()
    assert not idle.expired
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(5)
    assert idle.expired
    idle.absorb()
    assert task.cancelling() == 0


async def test_a_cancelled_idle_deadline_never_fires() -> None:
    task = asyncio.current_task()
    assert task is not None
    idle = IdleDeadline(task, 0.01)
    idle.cancel()
    await asyncio.sleep(0.05)
    assert not idle.expired
