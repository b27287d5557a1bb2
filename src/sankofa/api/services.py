"""What the lifespan opens and the routes use, handed over as one object."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sankofa.api.body import BodyDeadlines
from sankofa.auth.service import AuthService
from sankofa.cache import LayeredCache
from sankofa.engine.feature_guard import FeatureGuard
from sankofa.engine.features_online import FeatureStore, RedisClient
from sankofa.engine.scorer import DecisionOut, ScoreRequest, ScoringEngine
from sankofa.engine.transaction import TransactionParser
from sankofa.metrics import Metrics
from sankofa.queues.dispatcher import Dispatcher
from sankofa.queues.shedding import LoadShedder
from sankofa.rules.verdict import RulesEngine
from sankofa.settings import Settings
from sankofa.store.reads import ReadPools


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    #: The primary: every write, and reads that must see the latest writes.
    pool: asyncpg.Pool
    #: Read-only queries: the replica when configured, the primary otherwise.
    reads: ReadPools
    redis: RedisClient
    features: FeatureStore
    parser: TransactionParser
    engine: ScoringEngine
    dispatcher: Dispatcher[ScoreRequest, list[DecisionOut]]
    metrics: Metrics
    body_deadlines: BodyDeadlines
    shedder: LoadShedder
    guard: FeatureGuard
    #: Tokens, clients, roles and rates (sankofa.auth); consulted by rbac.requires.
    auth: AuthService
    #: The layered cache's namespaces (``sankofa.cache.layered``).
    cache: LayeredCache
    #: Rules, lists and limits (sankofa.rules).
    rules: RulesEngine | None = None
