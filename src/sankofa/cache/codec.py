"""How a namespace's values are stored in L2 (Redis): bytes in, bytes out."""

from __future__ import annotations

from typing import Protocol, TypeVar

import orjson

V = TypeVar("V")


class Codec(Protocol[V]):
    """How a value is stored in L2."""

    def dumps(self, value: V) -> bytes: ...

    def loads(self, data: bytes) -> V: ...


class BytesCodec:
    """For values that already are bytes (a rendered response body)."""

    def dumps(self, value: bytes) -> bytes:
        return value

    def loads(self, data: bytes) -> bytes:
        return data


class JsonCodec:
    """For JSON-shaped values (dicts, lists, strings, numbers), through orjson."""

    def dumps(self, value: object) -> bytes:
        return orjson.dumps(value)

    def loads(self, data: bytes) -> object:
        return orjson.loads(data)
