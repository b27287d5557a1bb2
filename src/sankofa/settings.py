"""One typed settings object, read once from ``SANKOFA_*`` variables and passed down.

Nothing below the edge reads the environment: ``create_app(settings)`` and the
command line hand the values they need to the parts they build.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The development pseudonymisation key. Refused outside development so that a
#: production deployment cannot silently hash identifiers with a public key.
DEV_HMAC_KEY = "sankofa-development-key-not-for-production"
#: The development card-token key (PCI DSS), refused outside development likewise.
DEV_CARD_TOKEN_KEY = "sankofa-development-card-key-not-for-production"

#: The development token signing secret (HS256). Refused whenever authentication
#: is on or the environment is production: anyone can read it here.
DEV_JWT_SECRET = "sankofa-development-jwt-secret-not-for-production"
#: The shortest signing secret accepted where authentication is on: 32 bytes, the
#: output size of HS256's hash (RFC 7518 3.2 requires at least that).
MIN_JWT_SECRET_BYTES = 32


class Settings(BaseSettings):
    """Every knob of the service. Units are in the names."""

    model_config = SettingsConfigDict(env_prefix="SANKOFA_", extra="ignore", frozen=True)

    environment: Literal["development", "test", "production"] = "development"

    # Where the state lives. Unset URLs mean: start embedded servers (``make run``).
    database_url: str | None = None
    #: A streaming replica of ``database_url``: reads (GET endpoints, reports) go
    #: there, writes to the primary. Unset: everything reads the primary.
    database_replica_url: str | None = None
    redis_url: str | None = None
    #: ``redis_url`` names a node of a Redis Cluster (the client learns the others
    #: from it). The feature keys are hash-tagged into ``redis_cluster_slot_groups``
    #: groups: a batch costs one round trip per master and one script call per
    #: group (engine.features_cluster). As many groups as masters, or a multiple.
    redis_cluster: bool = False
    redis_cluster_slot_groups: int = Field(default=3, ge=1, le=256)
    data_dir: Path = Path(".sankofa")
    redis_prefix: str = Field(default="sk", pattern=r"^[A-Za-z0-9_.-]{1,32}$")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    #: A separate port served by a worker of its own, for critical traffic (an
    #: authorisation system's connection pool): a flood of bulk traffic on the
    #: main port cannot delay it, since the bulk workers also run at a lower OS
    #: priority (bulk_niceness). None: no lane.
    critical_port: int | None = Field(default=None, ge=1, le=65535)
    bulk_niceness: int = Field(default=5, ge=0, le=19)
    #: Serve HTTPS, TLS 1.3 only, with this certificate (PEM, the chain after the
    #: leaf) and its private key (PEM, unencrypted), on every port (sankofa.tls).
    #: Unset: plain HTTP, for a TLS-terminating proxy in front (deploy/nginx).
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: The service's log lines on stderr (sankofa.logs): one JSON object per line
    #: for a log collector, or the old human-readable text. Only ``sankofa serve``
    #: and its workers read it; the other commands print to a terminal as before.
    log_format: Literal["json", "text"] = "json"

    hmac_key: SecretStr = SecretStr(DEV_HMAC_KEY)
    #: Key of the card tokens (HMAC-SHA256 of a PAN): its own key, so that the
    #: identifiers' key never opens cards and may be rotated apart (PCI DSS 3.5).
    card_token_key: SecretStr = SecretStr(DEV_CARD_TOKEN_KEY)
    #: LGPD: personal data (customer, device, IP and card refs, metadata) is
    #: removed from transactions received longer ago than this; the decision
    #: records stay. At least 45 days: the online features reach 39 days back.
    personal_data_retention_days: int = Field(default=365, ge=45, le=36_500)
    #: Mount /bench/bare and /bench/naive, the load tests' baselines (api.bench_routes).
    benchmark_endpoints: bool = False

    # Request limits.
    #: Room for 1000 transactions each carrying the largest metadata (2 KB).
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    #: A timestamp (or labelled_at) more than this far ahead of the server's clock is
    #: refused: it would otherwise age every other transaction out of the windows.
    max_clock_skew_s: float = Field(default=3600.0, ge=0)
    #: A request body must arrive within this long (408 otherwise).
    body_timeout_s: float = Field(default=10.0, gt=0)
    max_batch_items: int = Field(default=1000, ge=1, le=10_000)
    max_metadata_bytes: int = Field(default=2048, ge=64)

    # Dispatcher.
    max_batch_size: int = Field(default=256, ge=1, le=10_000)
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    max_in_flight_batches: int = Field(default=2, ge=1, le=64)
    queue_bound_critical: int = Field(default=4096, ge=1)
    queue_bound_high: int = Field(default=4096, ge=1)
    queue_bound_normal: int = Field(default=8192, ge=1)
    queue_bound_low: int = Field(default=8192, ge=1)
    deadline_ms_critical: float = Field(default=250.0, gt=0)
    deadline_ms_high: float = Field(default=500.0, gt=0)
    deadline_ms_normal: float = Field(default=1000.0, gt=0)
    deadline_ms_low: float = Field(default=5000.0, gt=0)
    ageing_ms: float = Field(default=200.0, gt=0)
    #: Refuse new requests of a class at the door while the event loop runs this
    #: late (queues/shedding.py); 0 turns shedding off for that class. Critical
    #: is never refused there.
    shed_lag_ms_high: float = Field(default=40.0, ge=0)
    shed_lag_ms_normal: float = Field(default=20.0, ge=0)
    shed_lag_ms_low: float = Field(default=10.0, ge=0)
    #: ... or while this many scoring requests are in progress in the worker
    #: (0: no limit). Latency of an admitted request is about in-progress /
    #: throughput, so these cap each class's latency under overload.
    shed_in_progress_high: int = Field(default=96, ge=0)
    shed_in_progress_normal: int = Field(default=48, ge=0)
    shed_in_progress_low: int = Field(default=24, ge=0)
    #: A signal must stay above a class's limit this long before the door
    #: refuses it: a stall's burst is queued, only sustained overload is shed.
    shed_sustain_ms: float = Field(default=150.0, ge=0)
    #: ... and serves it again once the signals have stayed clear this long
    #: (shedding clears them itself; without it a flood is let in again and again).
    shed_release_ms: float = Field(default=200.0, ge=0)
    drain_grace_s: float = Field(default=10.0, ge=0)

    # Pools and timeouts.
    db_pool_min: int = Field(default=2, ge=1)
    db_pool_max: int = Field(default=8, ge=1)
    db_timeout_s: float = Field(default=5.0, gt=0)
    #: The replica's pool: reads only (a primary-key lookup each), so smaller.
    db_replica_pool_max: int = Field(default=4, ge=1)
    #: A replica read slower than this is abandoned and served by the primary:
    #: the replica is an optimisation, never a reason to answer late.
    db_replica_timeout_s: float = Field(default=0.5, gt=0)
    #: After a replica failure, reads skip it for this long (straight to the
    #: primary) instead of paying the timeout on every request.
    db_replica_retry_s: float = Field(default=1.0, ge=0)
    redis_pool_max: int = Field(default=16, ge=1)
    redis_timeout_s: float = Field(default=2.0, gt=0)
    #: Idle customer/terminal feature keys expire after this long (wall clock);
    #: longer than the 39 days of history the windows need.
    feature_key_ttl_s: int = Field(default=45 * 86_400, ge=40 * 86_400)
    #: While the online features cannot be trusted (Redis down, or its histories
    #: lost and being rebuilt from PostgreSQL), these classes (comma-separated) are
    #: refused with a 503 and Retry-After; the others are scored on degraded
    #: features and flagged FEATURES_DEGRADED. Empty: none fails closed.
    features_fail_closed: str = Field(
        default="low", pattern=r"^((critical|high|normal|low)(,(critical|high|normal|low))*)?$"
    )
    #: How often each process checks Redis and the rebuild marker.
    feature_check_s: float = Field(default=0.5, gt=0)

    # The layered cache (sankofa.cache): GET /v1/transactions/{id}, and what the
    # engine reads per transaction (rules, lists, limits).
    #: Its Redis (L2 and the invalidation channel); unset: ``redis_url``. On a
    #: Redis Cluster without it, the cache has no L2 (the channel alone).
    cache_redis_url: str | None = None
    #: A cache call to Redis slower than this is a miss: PostgreSQL answers.
    cache_timeout_s: float = Field(default=0.25, gt=0)
    #: After a Redis failure the cache leaves Redis alone this long; invalidations
    #: it could not send are retried as often.
    cache_retry_s: float = Field(default=1.0, gt=0)
    cache_l1_max_entries: int = Field(default=10_000, ge=1)
    cache_l1_ttl_s: float = Field(default=60.0, ge=0)
    cache_l2_ttl_s: float = Field(default=600.0, ge=0)

    # Compression (api/compression.py).
    #: Responses at least this large are gzipped for a client that accepts gzip.
    gzip_min_bytes: int = Field(default=1024, ge=0)
    gzip_level: int = Field(default=6, ge=1, le=9)

    # Model and decision policy.
    #: The champion's artefact (JSON, any supported format); unset: the shipped default.
    model_path: Path | None = None
    #: A challenger scored in the same batches and stored beside the champion,
    #: never changing the decision (``sankofa shadow report`` compares them).
    shadow_model_path: Path | None = None
    review_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    decline_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    # Authentication and authorisation (sankofa.auth, docs/security.md).
    #: Bearer tokens required on every non-public endpoint. Unset: on in production,
    #: off in development and test (development mode: every request is let in, as
    #: before; ``make run`` and the test suite). Cannot be turned off in production.
    auth_required: bool | None = None
    #: The HS256 secret this service signs its access tokens with (``kid`` below).
    jwt_secret: SecretStr = SecretStr(DEV_JWT_SECRET)
    #: The key id stamped in the tokens' header; change it with the secret to rotate,
    #: keeping the old secret in ``jwks_file`` (kty oct) until its tokens expire.
    jwt_kid: str = Field(default="sankofa-1", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    jwt_issuer: str = Field(default="sankofa", min_length=1, max_length=256)
    jwt_audience: str = Field(default="sankofa-api", min_length=1, max_length=256)
    #: Lifetime of the tokens /v1/oauth/token issues, and the cap on any token's
    #: (exp - iat) this service accepts, its own or an identity provider's.
    jwt_ttl_s: int = Field(default=900, ge=1)
    jwt_max_ttl_s: int = Field(default=3600, ge=1, le=86_400)
    #: Clock skew allowed on exp / iat / nbf.
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)
    #: More verification keys (a JWKS JSON file: RSA, EC or oct keys, each with
    #: ``kid`` and ``alg``): an identity provider's public keys, or this service's
    #: previous secret during a rotation. Read at start; never fetched over a network.
    jwks_file: Path | None = None
    #: The ``iss`` the keys of ``jwks_file`` sign as (default: jwt_issuer).
    jwks_issuer: str | None = None
    #: Verified tokens kept in memory (until their exp) so a repeated token costs
    #: a dictionary look-up, not a signature check.
    token_cache_size: int = Field(default=10_000, ge=0, le=1_000_000)
    #: Each process re-reads the registered clients this often: a deleted client's
    #: tokens stop working within this time (at once in the process that deleted it).
    auth_clients_refresh_s: float = Field(default=2.0, gt=0)
    #: Requests per second per client (token bucket, per process; 0: no limit), and
    #: the burst above it. A client's own rate_per_s (``sankofa client create
    #: --rate``) overrides the rate.
    rate_limit_per_s: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    #: Token requests per minute per client id (each costs a slow scrypt check) ...
    token_requests_per_min: float = Field(default=60.0, gt=0)
    #: ... and per second for all client ids together: at ~60 ms of CPU each,
    #: unknown ids cannot make the service spend more than this many checks.
    token_requests_per_s_total: float = Field(default=10.0, gt=0)

    @property
    def auth_enabled(self) -> bool:
        """Tokens required: explicitly, or by default in production."""
        if self.auth_required is None:
            return self.environment == "production"
        return self.auth_required

    # Rules, lists and limits (sankofa.rules).
    #: Each instance checks this often whether the rules changed elsewhere (a poll
    #: of the latest revision); a change made through it is in force at once.
    rules_refresh_s: float = Field(default=1.0, gt=0, le=3600)
    #: The BACEN night-time PIX limit for individuals, in reais, and its night:
    #: from night_start_hour (included) to night_end_hour (excluded), local time in
    #: limits_timezone. A customer's own limit (PUT /v1/limits/customers/...) wins.
    night_pix_limit: Decimal = Field(default=Decimal("1000.00"), gt=0, le=10**12, decimal_places=2)
    night_start_hour: int = Field(default=20, ge=0, le=23)
    night_end_hour: int = Field(default=6, ge=0, le=23)
    limits_timezone: str = "America/Sao_Paulo"
    #: The most stored transactions one backtest reads (the answer says if it stopped).
    backtest_max_rows: int = Field(default=2_000_000, ge=1)

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production" and self.hmac_key.get_secret_value() == DEV_HMAC_KEY:
            raise ValueError("SANKOFA_HMAC_KEY must be set to a secret outside development")
        if len(self.hmac_key.get_secret_value()) < 16:
            raise ValueError("SANKOFA_HMAC_KEY must be at least 16 characters")
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("SANKOFA_TLS_CERTFILE and SANKOFA_TLS_KEYFILE must be set together")
        for name, path in (("CERTFILE", self.tls_certfile), ("KEYFILE", self.tls_keyfile)):
            if path is not None and not path.is_file():
                raise ValueError(f"SANKOFA_TLS_{name} is not a readable file: {path}")
        card_key = self.card_token_key.get_secret_value()
        if self.environment == "production" and (
            card_key == DEV_CARD_TOKEN_KEY or card_key == self.hmac_key.get_secret_value()
        ):
            raise ValueError(
                "SANKOFA_CARD_TOKEN_KEY must be set outside development, to a secret other"
                " than SANKOFA_HMAC_KEY"
            )
        if len(card_key) < 16:
            raise ValueError("SANKOFA_CARD_TOKEN_KEY must be at least 16 characters")
        if self.environment == "production" and self.auth_required is False:
            raise ValueError("SANKOFA_AUTH_REQUIRED cannot be false in production")
        if self.auth_enabled or self.environment == "production":
            secret = self.jwt_secret.get_secret_value()
            if secret == DEV_JWT_SECRET:
                raise ValueError(
                    "SANKOFA_JWT_SECRET must be set to a secret of its own where tokens are"
                    " required (e.g. openssl rand -hex 32)"
                )
            if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
                raise ValueError(
                    f"SANKOFA_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes"
                )
        if self.jwt_ttl_s > self.jwt_max_ttl_s:
            raise ValueError("SANKOFA_JWT_TTL_S must not exceed SANKOFA_JWT_MAX_TTL_S")
        try:
            ZoneInfo(self.limits_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"SANKOFA_LIMITS_TIMEZONE: unknown time zone {self.limits_timezone!r}"
            ) from None
        if self.redis_cluster and self.redis_url is None:
            # The embedded Redis is a single server.
            raise ValueError(
                "SANKOFA_REDIS_CLUSTER needs SANKOFA_REDIS_URL (a node of the cluster)"
            )
        if self.db_pool_min > self.db_pool_max:
            raise ValueError("SANKOFA_DB_POOL_MIN must not exceed SANKOFA_DB_POOL_MAX")
        if (
            self.review_threshold is not None
            and self.decline_threshold is not None
            and self.review_threshold > self.decline_threshold
        ):
            raise ValueError("SANKOFA_REVIEW_THRESHOLD must not exceed SANKOFA_DECLINE_THRESHOLD")
        return self
