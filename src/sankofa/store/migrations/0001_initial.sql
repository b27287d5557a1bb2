-- Transactions with their decisions, and the labels that became known later.
--
-- One row per transaction holds what was received and what was decided: the
-- decision is written in the same COPY as the transaction, so a row can never
-- exist half-stored, and the hot path pays for one tuple and one index entry.
-- Money is exact: integer cents, with the numeric amount derived from them;
-- every time is timestamptz. Personal identifiers are keyed HMACs.

CREATE TABLE transactions (
    transaction_id  text PRIMARY KEY,
    event_time      timestamptz NOT NULL,
    utc_offset_s    integer NOT NULL,
    amount_cents    bigint NOT NULL CHECK (amount_cents > 0 AND amount_cents <= 100000000000000),
    amount          numeric(15, 2) GENERATED ALWAYS AS (amount_cents::numeric / 100) STORED,
    currency        char(3) NOT NULL,
    customer_ref    text NOT NULL,          -- keyed HMAC of customer_id, never the clear value
    terminal_id     text NOT NULL,
    tx_type         text NOT NULL CHECK (tx_type IN ('card', 'pix', 'ted', 'boleto')),
    channel         text,
    device_ref      text,                   -- keyed HMAC of device_id
    ip_ref          text,                   -- keyed HMAC of ip_address
    metadata        jsonb,
    content_hash    bytea NOT NULL,         -- tells a replay (same content) from a conflict
    received_at     timestamptz NOT NULL DEFAULT now(),
    -- The decision.
    decision        text NOT NULL CHECK (decision IN ('approve', 'review', 'decline')),
    risk_score      double precision NOT NULL CHECK (risk_score >= 0 AND risk_score <= 1),
    risk_level      text NOT NULL CHECK (risk_level IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    reasons         text[] NOT NULL,
    model_version   text NOT NULL,
    -- The model's input vector, 15 big-endian float8 (float8send order), in the
    -- order the model artefact names; sankofa.store.repository decodes it.
    features        bytea NOT NULL CHECK (octet_length(features) % 8 = 0),
    priority        text NOT NULL CHECK (priority IN ('critical', 'high', 'normal', 'low')),
    queue_ms        real NOT NULL,
    processing_ms   real NOT NULL,
    batch_size      integer NOT NULL
);
-- Rebuilds, replays and backtests read by event time; BRIN stays tiny and cheap
-- to maintain because transactions arrive roughly in time order.
CREATE INDEX transactions_event_time_brin ON transactions USING brin (event_time);

CREATE TABLE labels (
    transaction_id  text PRIMARY KEY REFERENCES transactions (transaction_id),
    fraud           boolean NOT NULL,
    labelled_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
