"""``qhook serve`` stopped by a person before it finished starting is not a failed start-up (uvicorn's
run replaced: the moment of a Ctrl-C cannot be chosen in a real process)."""

from __future__ import annotations

import pytest

from qhook import server
from qhook.context import AppContext
from qhook.delivery.worker import SingleWorkerLock


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_ctrl_c_before_uvicorn_takes_the_signal_is_a_clean_stop(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGINT before uvicorn installs its handlers reaches ``run`` as KeyboardInterrupt. It exited
    with status 3, "a start-up hook failed", which a service manager reports as a crash."""

    def interrupted(self: object, sockets: object = None) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(server.uvicorn.Server, "run", interrupted)
    server.run_server(ctx, server.listen("127.0.0.1", 0), with_worker=True)  # no SystemExit
    lock = SingleWorkerLock(ctx)  # serve let go of the SQLite worker lock on its way out
    lock.acquire()
    lock.release()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_start_that_fails_still_exits_3(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> None:
    def never_started(self: object, sockets: object = None) -> None:
        return None  # as uvicorn returns when a lifespan hook failed: started stays False

    monkeypatch.setattr(server.uvicorn.Server, "run", never_started)
    with pytest.raises(SystemExit) as stopped:
        server.run_server(ctx, server.listen("127.0.0.1", 0), with_worker=False)
    assert stopped.value.code == 3
