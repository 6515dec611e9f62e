"""A Ctrl-C in the moment ``qhook serve`` hands over to uvicorn stops it, every time.

Between the lines saying where to open qhook and uvicorn installing its own SIGINT handler, Python's
handler raised KeyboardInterrupt in whatever ran next; at times that was a weakref callback of the
garbage collector, which drops exceptions ("Exception ignored in ..."), and serve ran on as if never
interrupted (2 of 20 Ctrl-Cs sent 2-5 ms after the password line, tests/e2e). Here the signal comes
at exactly that moment, from the main thread, as the terminal's would.
"""

from __future__ import annotations

import signal
from typing import Any

import pytest
from fastapi import FastAPI

from qhook import server
from qhook.context import AppContext
from qhook.delivery.worker import SingleWorkerLock


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_ctrl_c_as_serve_hands_over_to_uvicorn_stops_it_once_started(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    said_password = server.initial_password.hand_over
    started: list[bool] = []
    before = signal.getsignal(signal.SIGINT)

    def interrupted_after_the_password(*args: Any) -> None:
        said_password(*args)
        signal.raise_signal(signal.SIGINT)  # handled before raise_signal returns

    freeze = server.heap.freeze_in_app

    async def last_start_up_hook(app: FastAPI) -> None:
        started.append(True)
        await freeze(app)

    monkeypatch.setattr(server.initial_password, "hand_over", interrupted_after_the_password)
    monkeypatch.setattr(server.heap, "freeze_in_app", last_start_up_hook)
    try:
        server.run_server(ctx, server.listen("127.0.0.1", 0), with_worker=True)  # returns: stopped
    except KeyboardInterrupt:
        pytest.fail("the Ctrl-C came out as KeyboardInterrupt, where a weakref callback may drop it")
    assert started == [True]  # uvicorn started (the worker too), then stopped for the Ctrl-C
    assert signal.getsignal(signal.SIGINT) is before  # serve's own handler lasted only its start
    lock = SingleWorkerLock(ctx)  # and serve let go of the SQLite worker lock
    lock.acquire()
    lock.release()
