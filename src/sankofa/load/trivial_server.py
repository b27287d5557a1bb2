"""A trivial HTTP/1.1 server for the generator's ceiling: any request, one fixed 200 JSON answer.

It reads each request's head and ``Content-Length`` body (pipelined requests
too) and writes a fixed answer of about the size of a scoring answer, on
uvloop when installed. It does as little as an HTTP server can in Python, so
that a run against it measures the client, not the server. Loopback only.

    python -m sankofa.load.trivial_server --port 8900
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import Final, cast

from sankofa.load import _loop

BODY: Final = (
    b'{"transaction_id":"trivial","decision":"approve","risk_score":0.001,"risk_level":"LOW",'
    b'"reasons":["NO_STRONG_RISK_FACTOR"],"model_version":"trivial","priority":"normal",'
    b'"replayed":false,"queue_ms":0.0,"processing_ms":0.0,"batch_size":1}'
)
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
    + str(len(BODY)).encode()
    + b"\r\n\r\n"
    + BODY
)
_CONTENT_LENGTH: Final = b"\r\ncontent-length:"
_CONTENT_LENGTH_CAPS: Final = b"\r\nContent-Length:"  # the usual spelling: no lower() needed


class TrivialProtocol(asyncio.Protocol):
    """Answers every complete request on the connection with :data:`RESPONSE`."""

    __slots__ = ("_buf", "_transport")

    def __init__(self) -> None:
        self._buf = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        answers = 0
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            i = buf.find(_CONTENT_LENGTH_CAPS, 0, end)
            if i < 0:
                i = buf[:end].lower().find(_CONTENT_LENGTH)
            length = 0
            if i >= 0:
                j = buf.find(b"\r\n", i + 2)
                try:
                    length = int(buf[i + len(_CONTENT_LENGTH) : j if 0 <= j < end else end])
                except ValueError:
                    self._bad_request()
                    return
            total = end + 4 + length
            if len(buf) < total:
                break
            answers += 1
            buf = buf[total:]
        self._buf = buf
        if answers and self._transport is not None:
            self._transport.write(RESPONSE * answers)

    def _bad_request(self) -> None:
        if self._transport is not None:
            self._transport.write(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self._transport.close()


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(TrivialProtocol, host, port, backlog=1024, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"trivial server on http://{host}:{port}", flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sankofa.load.trivial_server")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    _loop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
