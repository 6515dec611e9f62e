"""The two yardsticks qhook is measured against, with no database at all.

- ``bare_aiohttp``: the limit — one aiohttp ClientSession posting the same bodies, same concurrency.
- ``classic_pool``: the classic Python stack — 2 processes x 10 threads, ``requests.post`` per job,
  as an RQ/Celery worker pool does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

T = TypeVar("T")


async def _bare(url: str, bodies: list[bytes], concurrency: int) -> float:
    import aiohttp

    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for item in enumerate(bodies):
        queue.put_nowait(item)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                index, body = queue.get_nowait()
                headers = {"content-type": "application/json", "webhook-id": f"bare_{index}"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - start


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop, the loop ``qhook worker`` ships with; qhook and the bare client both use it."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def bare_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Seconds to post every body."""
    return run_loop(_bare(url, bodies, concurrency))


def _pool_process(url: str, bodies: list[tuple[int, bytes]], threads: int) -> None:
    import requests

    local_sessions: dict[int, requests.Session] = {}

    def post(item: tuple[int, bytes]) -> None:
        import threading

        session = local_sessions.setdefault(threading.get_ident(), requests.Session())
        index, body = item
        session.post(
            url, data=body, headers={"content-type": "application/json", "webhook-id": f"pool_{index}"}
        )

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(post, bodies))


def classic_pool(url: str, bodies: list[bytes], processes: int = 2, threads: int = 10) -> float:
    """Seconds for ``processes`` x ``threads`` doing requests.post per job."""
    items = list(enumerate(bodies))
    shards = [items[i::processes] for i in range(processes)]
    context = get_context("spawn")
    workers = [context.Process(target=_pool_process, args=(url, shard, threads)) for shard in shards]
    start = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - start
