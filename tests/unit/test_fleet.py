"""The restart rule of ``qhook worker --processes``: pauses that double while a process keeps
ending, and a process that cannot be made is tried again (fake processes: no spawning here); and
which CPU each process is bound to with ``--cpu-affinity`` (the system calls faked)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from qhook.delivery import fleet
from qhook.domain import restarts
from qhook.settings import Settings


@dataclass
class FakeProcess:
    exitcode: int | None = None
    pid: int | None = 1


class FakeFleet(fleet.Fleet):
    def __init__(self, fail: list[bool] | None = None) -> None:
        super().__init__(fleet.Options(Settings(secret_key="k" * 44), 2, None, None, "127.0.0.1"))  # type: ignore[arg-type]
        self.made: list[FakeProcess] = []
        self.fail = fail or []

    def _spawn(self, index: int) -> Any:
        if self.fail and self.fail.pop(0):
            raise OSError(11, "Resource temporarily unavailable")
        process = FakeProcess()
        self.made.append(process)
        return process


def test_a_process_that_keeps_ending_waits_longer_each_time(caplog: pytest.LogCaptureFixture) -> None:
    f = FakeFleet()
    f._members = [fleet._Member(1, f._spawn(1), 0.0)]
    now = 0.0
    pauses = []
    for _ in range(8):
        f.made[-1].exitcode = 1
        f.watch(now)
        restart_at = f._members[0].restart_at
        assert restart_at is not None
        pauses.append(restart_at - now)
        now = restart_at
        f.watch(now)  # started again
        assert f._members[0].restart_at is None
        now += 0.5  # ends soon after
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60]
    assert "delivery process 1 ended (exit status 1); starting it again in 60 s" in caplog.text


def test_a_process_that_ran_a_while_starts_again_after_the_shortest_pause() -> None:
    f = FakeFleet()
    f._members = [fleet._Member(1, f._spawn(1), 0.0)]
    f._members[0].ends = 5
    f.made[-1].exitcode = -9
    f.watch(restarts.MOST_S + 1)
    assert f._members[0].restart_at == restarts.MOST_S + 2


def test_a_process_that_cannot_be_made_is_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    f = FakeFleet(fail=[False, True, False])
    f._members = [fleet._Member(1, f._spawn(1), 0.0)]
    f.made[-1].exitcode = 1
    f.watch(0.0)  # ended: again at 1 s
    f.watch(1.0)  # the spawn fails: again 2 s later
    assert f._members[0].restart_at == 3.0
    assert "delivery process 1 could not be started" in caplog.text
    f.watch(3.0)
    assert f._members[0].restart_at is None and len(f.made) == 2
    assert f._members[0].process is f.made[-1]


def test_running_processes_are_left_alone() -> None:
    f = FakeFleet()
    f._members = [fleet._Member(1, f._spawn(1), 0.0)]
    f.watch(100.0)
    assert f._members[0].restart_at is None and len(f.made) == 1


@pytest.mark.parametrize(
    ("port", "processes", "refused"),
    [
        (None, 64, None),
        (9100, 2, None),
        (65534, 2, None),
        (65535, 1, None),
        (65535, 2, "Cannot serve metrics on ports 65535 to 65536: the last port is 65535"),
        (65534, 3, "Cannot serve metrics on ports 65534 to 65536: the last port is 65535"),
    ],
)
def test_metrics_ports_past_the_last(port: int | None, processes: int, refused: str | None) -> None:
    assert fleet.metrics_ports_past_the_last(port, processes) == refused


def test_process_i_takes_the_ith_cpu_in_turn() -> None:
    cpus = (2, 5, 7)
    assert [fleet.cpu_of(i, cpus) for i in range(7)] == [2, 5, 7, 2, 5, 7, 2]
    assert fleet.cpu_of(3, (0,)) == 0


def test_the_allowed_cpus_come_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet.os, "sched_getaffinity", lambda pid: {3, 1, 2}, raising=False)
    assert fleet.allowed_cpus() == (1, 2, 3)


def test_cpu_affinity_without_sched_setaffinity_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(fleet.os, "sched_getaffinity", raising=False)
    with pytest.raises(fleet.QhookError, match="needs Linux's sched_setaffinity"):
        fleet.allowed_cpus()


def test_a_process_that_cannot_be_bound_runs_unbound_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[set[int]] = []

    def refuse(pid: int, cpus: set[int]) -> None:
        asked.append(cpus)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(fleet.os, "sched_setaffinity", refuse, raising=False)
    with caplog.at_level(logging.INFO, logger=fleet.__name__):
        fleet.bind(1, (0, 4))
    assert asked == [{4}]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert (
        record.getMessage()
        == "delivery process 1 could not be bound to CPU 4: Invalid argument; it runs on any CPU"
    )


def test_a_bound_process_says_to_which_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[int, set[int]]] = []
    monkeypatch.setattr(
        fleet.os, "sched_setaffinity", lambda pid, cpus: asked.append((pid, cpus)), raising=False
    )
    with caplog.at_level(logging.INFO, logger=fleet.__name__):
        fleet.bind(2, (0, 4))
    assert asked == [(0, {0})]
    assert [r.getMessage() for r in caplog.records] == ["delivery process 2 bound to CPU 0"]
