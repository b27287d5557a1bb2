"""Lists and limits read through the layered cache (``sankofa.cache``).

``EntitySource.load_many`` (one PostgreSQL statement per batch) is the L3
loader of the ``lists`` namespace; the scorer reads a batch's customers,
terminals, devices and addresses with one ``get_many``: L1 in process, then
one Redis MGET, then one statement for what is left. Most keys are on no list
and have no limits of their own, so absences are cached too; every admin
write (insert, update, delete) invalidates its key on every instance through
the cache's channel. Expiry needs no invalidation: an entry carries its
``expires_at`` and the verdict compares it with the transaction's clock.

Rules themselves are not here: each process holds the whole rule set as a
snapshot (``book.RuleBook``), current at once after a write in the process
that made it and within ``SANKOFA_RULES_REFRESH_S`` elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from sankofa.cache import JsonCodec, LayeredCache
from sankofa.rules.book import Entity, EntitySource

#: The cache namespace of lists and limits, by ``book.entity_key``.
NAMESPACE: Final = "lists"


class CachedEntities:
    """``load_many`` and ``invalidate`` over the cache's ``lists`` namespace."""

    def __init__(
        self, cache: LayeredCache, source: EntitySource, *, namespace: str = NAMESPACE
    ) -> None:
        self._cache = cache
        self._namespace = namespace
        #: The loader behind the cache (its ``reads`` count PostgreSQL statements).
        self.source = source

    @property
    def reads(self) -> int:
        """Statements the loader has sent to PostgreSQL."""
        return self.source.reads

    async def load_many(self, keys: Sequence[str]) -> dict[str, Entity]:
        got = await self._cache.get_many(self._namespace, list(keys))
        return {k: Entity.from_dict(v) for k, v in got.items() if v is not None}

    async def invalidate(self, keys: Sequence[str]) -> None:
        await self._cache.invalidate(self._namespace, list(keys))


def register(
    cache: LayeredCache,
    source: EntitySource,
    *,
    l1_max_entries: int,
    l1_ttl_s: float,
    l2_ttl_s: float,
) -> CachedEntities:
    """Put ``source`` behind the cache (absences cached as long as presences)."""

    async def load(keys: Sequence[str]) -> Mapping[str, Any]:
        found = await source.load_many(keys)
        return {k: e.as_dict() for k, e in found.items()}

    cache.register(
        NAMESPACE,
        load,
        codec=JsonCodec(),
        l1_max_entries=l1_max_entries,
        l1_ttl_s=l1_ttl_s,
        l1_negative_ttl_s=l1_ttl_s,
        l2_ttl_s=l2_ttl_s,
        l2_negative_ttl_s=l2_ttl_s,
    )
    return CachedEntities(cache, source)
