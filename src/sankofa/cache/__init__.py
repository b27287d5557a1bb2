"""The layered cache (L1 in process, L2 Redis, L3 PostgreSQL): see ``layered``."""

from sankofa.cache._namespace import Loader
from sankofa.cache.codec import BytesCodec, Codec, JsonCodec
from sankofa.cache.layered import LayeredCache, open_cache

__all__ = ["BytesCodec", "Codec", "JsonCodec", "LayeredCache", "Loader", "open_cache"]
