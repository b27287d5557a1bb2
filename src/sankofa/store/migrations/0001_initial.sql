-- Transactions, their decisions, and the labels that became known later.
-- Money is numeric (never float); every time is timestamptz.
-- amount is numeric(15,2), one digit wider than numeric(14,2), so that the
-- largest accepted amount, 10^12, fits.

CREATE TABLE transactions (
    transaction_id  text PRIMARY KEY,
    event_time      timestamptz NOT NULL,
    utc_offset_s    integer NOT NULL,
    amount          numeric(15, 2) NOT NULL CHECK (amount > 0),
    currency        char(3) NOT NULL,
    customer_ref    text NOT NULL,          -- keyed HMAC of customer_id, never the clear value
    terminal_id     text NOT NULL,
    tx_type         text NOT NULL CHECK (tx_type IN ('card', 'pix', 'ted', 'boleto')),
    channel         text,
    device_ref      text,                   -- keyed HMAC of device_id
    ip_ref          text,                   -- keyed HMAC of ip_address
    metadata        jsonb,
    content_hash    bytea NOT NULL,         -- tells a replay (same content) from a conflict
    received_at     timestamptz NOT NULL DEFAULT now()
);
-- Rebuilds, replays and backtests read by event time; BRIN stays tiny and cheap
-- to maintain because transactions arrive roughly in time order.
CREATE INDEX transactions_event_time_brin ON transactions USING brin (event_time);

CREATE TABLE decisions (
    transaction_id  text PRIMARY KEY REFERENCES transactions (transaction_id),
    decision        text NOT NULL CHECK (decision IN ('approve', 'review', 'decline')),
    risk_score      double precision NOT NULL CHECK (risk_score >= 0 AND risk_score <= 1),
    risk_level      text NOT NULL CHECK (risk_level IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    reasons         text[] NOT NULL,
    model_version   text NOT NULL,
    features        double precision[] NOT NULL,
    priority        text NOT NULL CHECK (priority IN ('critical', 'high', 'normal', 'low')),
    queue_ms        real NOT NULL,
    processing_ms   real NOT NULL,
    batch_size      integer NOT NULL,
    decided_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE labels (
    transaction_id  text PRIMARY KEY REFERENCES transactions (transaction_id),
    fraud           boolean NOT NULL,
    labelled_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now()
);
