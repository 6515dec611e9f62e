"""A fast HTTP/1.1 receiver for benchmarks, run as its own process so it has its own core.

It keeps a ledger: every ``webhook-id`` (or body) it sees, with arrival times, so a run can account
for each event as delivered, missing or cut off. ``GET /_stats`` returns the ledger summary and
``GET /_ledger`` the ids with arrival times; ``POST /_reset`` clears it.

Modes: ``--delay-ms N`` answers after N ms; ``--hang`` accepts and never answers (isolation tests).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Ledger:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        self.duplicates = 0
        self.first: float | None = None
        self.last: float | None = None

    def seen(self, key: str, at: float) -> None:
        self.requests += 1
        if key in self.arrivals:
            self.duplicates += 1
        else:
            self.arrivals[key] = at
            self.first = at if self.first is None else self.first
            self.last = at

    def summary(self) -> dict[str, object]:
        """Counts and first and last arrival, without reading the arrivals: benches ask for it
        every few ms while a run goes on (``bench.env.delivered``)."""
        return {
            "requests": self.requests,
            "unique": len(self.arrivals),
            "duplicates": self.duplicates,
            "first": self.first,
            "last": self.last,
        }


class Receiver(asyncio.Protocol):
    def __init__(self, ledger: Ledger, delay_s: float, hang: bool) -> None:
        self.ledger = ledger
        self.delay_s = delay_s
        self.hang = hang
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).decode("latin-1")
            lines = head.split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < head_end + 4 + length:
                return
            body = bytes(self.buffer[head_end + 4 : head_end + 4 + length])
            del self.buffer[: head_end + 4 + length]
            self.handle(lines[0], headers, body)

    def handle(self, request_line: str, headers: dict[str, str], body: bytes) -> None:
        now = time.time()
        method, path, _ = request_line.split(" ", 2)
        if path.startswith("/_"):
            self.control(method, path)
            return
        key = headers.get("webhook-id") or headers.get("x-bench-id") or body.decode(errors="replace")
        self.ledger.seen(key, now)
        if self.hang:
            return
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self._answer)
        else:
            self._answer()

    def _answer(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_OK)

    def control(self, method: str, path: str) -> None:
        if path == "/_reset":
            self.ledger.__init__()  # type: ignore[misc]
            payload: object = {"reset": True}
        elif path == "/_ledger":
            payload = self.ledger.arrivals
        else:
            payload = self.ledger.summary()
        data = json.dumps(payload).encode()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(data)).encode()
            + b"\r\n\r\n"
            + data
        )


async def serve(port: int, delay_ms: float, hang: bool) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    ledger = Ledger()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: Receiver(ledger, delay_ms / 1000, hang), "127.0.0.1", port, backlog=4096
    )
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--hang", action="store_true")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.delay_ms, args.hang))


if __name__ == "__main__":
    main()
