"""Running scenarios fairly on a shared, noisy machine: receivers, repeats, medians, ratios."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.pg import free_port

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figure:
    """One measured quantity over several runs."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "median": round(self.median, 3),
            "min": round(min(self.values), 3),
            "max": round(max(self.values), 3),
            "runs": [round(v, 3) for v in self.values],
        }


@contextmanager
def receiver(delay_ms: float = 0.0, hang: bool = False) -> Iterator[str]:
    """A receiver subprocess on a free loopback port; yields its base URL."""
    port = free_port()
    args = [sys.executable, "-m", "bench.receiver", "--port", str(port), "--delay-ms", str(delay_ms)]
    if hang:
        args.append("--hang")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=Path(__file__).parent.parent)
    assert process.stdout is not None
    process.stdout.readline()  # "listening ..."
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def control(base: str, what: str) -> Any:
    method = "POST" if what == "reset" else "GET"
    request = urllib.request.Request(f"{base}/_{what}", method=method)
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def alternate(runs: int, contenders: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run each contender ``runs`` times, interleaved, each round starting one later (A B C, B C A,
    C A B, ...), so neither the machine's noise nor what ran just before favours one. In a fixed
    order each contender always followed the same one (``--cpu-affinity`` after the unbound run of
    the same queue, bench/throughput)."""
    out: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(runs):
        start = round_ % len(names)
        for name in names[start:] + names[:start]:
            out[name].append(contenders[name]())
    return out


def write(scenario: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "scenario": scenario,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        **payload,
    }
    path = RESULTS / f"{scenario}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
