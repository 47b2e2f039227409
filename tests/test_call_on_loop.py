"""``call_on_loop``: a coroutine run on another thread's loop, never left unawaited."""
import asyncio
import gc
import warnings

import pytest

from graphstore.core.loop_thread import LoopThread, call_on_loop


async def _double(x):
    await asyncio.sleep(0)
    return 2 * x


async def _fail():
    raise KeyError("nope")


def test_result_and_exception_reach_the_calling_thread():
    loop_thread = LoopThread()
    try:
        assert call_on_loop(loop_thread.loop, _double, 21).result(5) == 42
        with pytest.raises(KeyError, match="nope"):
            call_on_loop(loop_thread.loop, _fail).result(5)
    finally:
        loop_thread.stop()


def test_a_closed_loop_refuses_at_once():
    loop_thread = LoopThread()
    loop_thread.stop()
    assert loop_thread.loop.is_closed()
    with pytest.raises(RuntimeError):
        call_on_loop(loop_thread.loop, _double, 1)


def _never_awaited_warnings(submit) -> list:
    """Queue a call on a loop that has stopped for good, then close the loop: the state
    a driver's loop is in at shutdown when a user thread's request comes too late."""
    loop = asyncio.new_event_loop()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        future = submit(loop)
        loop.close()
        del submit
        gc.collect()
    assert not future.done()           # it never ran; the caller's timeout ends its wait
    return [w for w in caught if "never awaited" in str(w.message)]


def test_a_call_queued_on_a_loop_that_never_runs_it_leaves_no_coroutine():
    assert not _never_awaited_warnings(lambda loop: call_on_loop(loop, _double, 1))


def test_the_same_race_with_run_coroutine_threadsafe_leaves_one():
    """The control: what the helper replaces fails this way (the CI failure's cause)."""
    assert _never_awaited_warnings(
        lambda loop: asyncio.run_coroutine_threadsafe(_double(1), loop))
