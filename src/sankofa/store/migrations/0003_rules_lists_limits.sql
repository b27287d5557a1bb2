-- Rules, hot and allow lists, and per-customer limits (sankofa.rules).
--
-- Rules are versioned: every create, update and delete appends a row, so the
-- history is the table itself and nothing is ever updated in place. The rule in
-- force is the latest version of its id, unless that version is a deletion.
-- `revision` orders every change: an instance polls max(revision) to learn that
-- its in-process snapshot of the rules is stale.
CREATE TABLE rule_versions (
    revision     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id      text NOT NULL CHECK (rule_id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    version      integer NOT NULL CHECK (version >= 1),
    deleted      boolean NOT NULL DEFAULT false,
    action       text NOT NULL CHECK (action IN ('decline', 'review', 'step_up', 'allow')),
    priority     integer NOT NULL,
    mode         text NOT NULL CHECK (mode IN ('active', 'shadow')),
    expression   text NOT NULL,
    description  text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rule_id, version)
);

-- Hot lists (decline) and allow lists (approve). Customers, devices and IP
-- addresses are kept as the same keyed HMACs the transactions carry, never in
-- clear; terminals as their id, as in `transactions`. The scorer looks entries
-- up by (kind, value_ref) for a whole batch at once: the primary key's prefix.
CREATE TABLE list_entries (
    kind         text NOT NULL CHECK (kind IN ('customer', 'terminal', 'device', 'ip')),
    value_ref    text NOT NULL,
    list         text NOT NULL CHECK (list IN ('hot', 'allow')),
    reason       text NOT NULL,
    expires_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, value_ref, list)
);

-- A customer's own limits, overriding the defaults (settings): the BACEN
-- night-time PIX limit (NULL: none, e.g. a company) and a cap on any single
-- transaction (NULL: none). No row: the defaults apply.
CREATE TABLE customer_limits (
    customer_ref           text PRIMARY KEY,
    night_pix_limit_cents  bigint CHECK (night_pix_limit_cents > 0),
    max_amount_cents       bigint CHECK (max_amount_cents > 0),
    reason                 text NOT NULL DEFAULT '',
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- The scorer's one read per batch: every list entry and customer limit of the
-- batch's keys ("{kind}:{value_ref}", as sankofa.rules.book names them). A function, for its plan_cache_mode: the pool
-- plans every statement with its parameters (store/db.py), and planning this join
-- against 512-element arrays took 25-55 ms a batch, where the generic plan (an
-- index lookup per key) runs in 2-4 ms (measured on the loaded 2-core test box).
CREATE FUNCTION rules_load_entities(keys text[])
RETURNS TABLE (key text, what text, reason text, expires_at timestamptz,
               night_pix_limit_cents bigint, max_amount_cents bigint)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = 'force_generic_plan'
AS $$
BEGIN
    -- A key is "{kind}:{value_ref}"; a kind never holds ':', a value_ref may.
    RETURN QUERY
    WITH k AS (
        SELECT u.key, split_part(u.key, ':', 1) AS kind,
               substr(u.key, strpos(u.key, ':') + 1) AS value_ref
        FROM unnest(keys) AS u(key)
    )
    SELECT k.key, e.list, e.reason, e.expires_at, NULL::bigint, NULL::bigint
    FROM k JOIN list_entries e ON e.kind = k.kind AND e.value_ref = k.value_ref
    UNION ALL
    SELECT k.key, 'limits'::text, l.reason, NULL::timestamptz,
           l.night_pix_limit_cents, l.max_amount_cents
    FROM k JOIN customer_limits l ON k.kind = 'customer' AND l.customer_ref = k.value_ref;
END
$$;

-- Decisions: rules may ask for a step-up (extra authentication of the payer),
-- and each decision keeps the rules that matched it: the active ones (id@version,
-- the one that decided first) and the shadow ones, recorded and never acted on.
-- The looser CHECK replaces the old one without a scan (NOT VALID): every
-- stored row already satisfies the stricter one. Nullable columns without a
-- default rewrite nothing.
ALTER TABLE transactions DROP CONSTRAINT transactions_decision_check;
ALTER TABLE transactions ADD CONSTRAINT transactions_decision_check
    CHECK (decision IN ('approve', 'review', 'decline', 'step_up')) NOT VALID;
ALTER TABLE transactions
    ADD COLUMN rule_hits text[],
    ADD COLUMN shadow_rule_hits text[];
