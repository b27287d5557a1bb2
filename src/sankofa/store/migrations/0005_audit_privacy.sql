-- The audit trail (append-only, hash-chained), card tokens, and the service's role.
--
-- audit_log: one row per audited event. ``payload`` is the canonical text of
-- the record (JSON: seq, at, kind, actor, details) and ``hash`` is
-- sha256(prev_hash || payload as UTF-8), ``prev_hash`` the previous row's hash
-- (32 zero bytes for the first). Altering a row breaks its hash; removing or
-- reordering rows breaks the seq run or the prev_hash links; removing the last
-- rows disagrees with audit_head. `sankofa audit verify` checks all of that
-- (sankofa.store.audit).
--
-- Appends go through audit_append() only. It updates the single audit_head row
-- first, so concurrent writers queue on that row lock and the chain has one
-- total order (held to the end of the writer's transaction: the record commits
-- or rolls back with what it records). It is SECURITY DEFINER, so the service's
-- role needs no right on audit_head and no INSERT on audit_log: it cannot write
-- a row with a made-up hash, nor UPDATE, DELETE or TRUNCATE one (grants below;
-- the triggers below also stop the owner, short of a superuser disabling them).
--
-- Decisions are recorded by a statement trigger on transactions: every COPY (or
-- INSERT) of a batch of decided transactions appends one record naming the
-- transaction ids and a digest of their decisions, inside the same statement,
-- so the hot path pays no extra round trip and no decision is stored unrecorded.

CREATE TABLE audit_log (
    seq         bigint PRIMARY KEY,
    payload     text NOT NULL,
    prev_hash   bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash        bytea NOT NULL CHECK (octet_length(hash) = 32)
);

-- A batch's record lists up to 1000 ids (~20 KB): lz4 compresses it for TOAST
-- several times faster than the default pglz, where the server has it.
DO $$
BEGIN
    ALTER TABLE audit_log ALTER COLUMN payload SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN NULL;
END
$$;

CREATE TABLE audit_head (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq         bigint NOT NULL,
    hash        bytea NOT NULL
);
INSERT INTO audit_head (seq, hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

-- Readable view of the trail (what an auditor queries).
CREATE VIEW audit_trail AS
SELECT seq,
       (payload::jsonb ->> 'at')::timestamptz AS at,
       payload::jsonb ->> 'kind' AS kind,
       payload::jsonb ->> 'actor' AS actor,
       payload::jsonb -> 'details' AS details,
       encode(hash, 'hex') AS hash
FROM audit_log;

CREATE FUNCTION audit_append(p_kind text, p_actor text, p_details jsonb)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp, public AS $$
DECLARE
    v_seq bigint;
    v_prev bytea;
    v_payload text;
    v_hash bytea;
BEGIN
    IF p_kind IS NULL OR p_kind !~ '^[a-z][a-z0-9_.]{0,63}$' THEN
        RAISE EXCEPTION 'audit kind must match [a-z][a-z0-9_.]{0,63}';
    END IF;
    -- The row lock on the head serialises appenders until their commit.
    SELECT seq + 1, hash INTO v_seq, v_prev FROM audit_head WHERE only_row FOR UPDATE;
    v_payload := jsonb_build_object(
        'seq', v_seq,
        'at', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'kind', p_kind,
        'actor', coalesce(p_actor, session_user::text),
        'details', coalesce(p_details, '{}'::jsonb)
    )::text;
    v_hash := sha256(v_prev || convert_to(v_payload, 'UTF8'));
    UPDATE audit_head SET seq = v_seq, hash = v_hash WHERE only_row;
    INSERT INTO audit_log (seq, payload, prev_hash, hash) VALUES (v_seq, v_payload, v_prev, v_hash);
    RETURN v_seq;
END
$$;
REVOKE ALL ON FUNCTION audit_append(text, text, jsonb) FROM PUBLIC;

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- One line per decision, hashed in the order the batch was stored (the order
-- of the record's transaction_ids; no sort on the hot path): what a decision
-- batch's record holds. `sankofa audit verify --decisions` recomputes it from
-- the stored rows, so a decision altered after the fact is caught too. Erasure
-- and retention never touch these columns. The score as float8send bytes: its
-- exact bits, whatever extra_float_digits says.
CREATE FUNCTION audit_decision_line(t transactions) RETURNS bytea
LANGUAGE sql STABLE AS $$
    SELECT convert_to(concat_ws(E'\x1f', t.transaction_id, t.decision, t.risk_level,
                                array_to_string(t.reasons, ','), t.model_version), 'UTF8')
           || float8send(t.risk_score) || t.content_hash
$$;

CREATE FUNCTION audit_decisions() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp, public AS $$
DECLARE
    v_ids text[];
    v_digest bytea;
BEGIN
    -- One scan of the transition table feeds both aggregates, in the same order.
    SELECT array_agg(n.transaction_id), sha256(string_agg(audit_decision_line(n), '\x0a'::bytea))
      INTO v_ids, v_digest
      FROM new_rows n;
    IF v_ids IS NOT NULL THEN
        PERFORM audit_append(
            'decision_batch',
            nullif(current_setting('sankofa.actor', true), ''),
            jsonb_build_object('count', cardinality(v_ids), 'transaction_ids', to_jsonb(v_ids),
                               'digest', encode(v_digest, 'hex')));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER transactions_audit AFTER INSERT ON transactions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION audit_decisions();

-- PCI DSS: a card is kept only as a keyed HMAC token and its last four digits.
-- LGPD: erased_at marks a row whose personal data was removed (erasure or
-- retention); its decision stays.
ALTER TABLE transactions
    ADD COLUMN card_token text,
    ADD COLUMN card_last4 char(4) CHECK (card_last4 ~ '^[0-9]{4}$'),
    ADD COLUMN personal_data_erased_at timestamptz;

-- The service's database role: everything it needs on the data, only SELECT on
-- the audit trail (appends go through audit_append). Created when the migrating
-- role may create roles; otherwise the operator does it (docs/security.md).
DO $$
BEGIN
    BEGIN
        CREATE ROLE sankofa_app NOLOGIN;
    EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;  -- exists (or another session made it)
        WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot create role sankofa_app here; grant its rights by hand';
            RETURN;
    END;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sankofa_app', current_database());
    GRANT USAGE ON SCHEMA public TO sankofa_app;
    GRANT SELECT ON schema_migrations TO sankofa_app;
    GRANT SELECT, INSERT, UPDATE ON transactions, labels TO sankofa_app;
    -- Tables of earlier migrations (0003 rules, lists and limits; 0004 clients):
    -- rule versions are only ever appended.
    GRANT SELECT, INSERT ON rule_versions TO sankofa_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON list_entries, customer_limits, auth_clients
        TO sankofa_app;
    GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO sankofa_app;
    GRANT SELECT ON audit_log, audit_head, audit_trail TO sankofa_app;
    REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON audit_log, audit_head FROM sankofa_app;
    GRANT EXECUTE ON FUNCTION audit_append(text, text, jsonb) TO sankofa_app;
    -- Tables later migrations create (by this same role) are usable by the service;
    -- a migration that must restrict one says so with its own REVOKE.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO sankofa_app;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO sankofa_app;
END
$$;

-- Retention works through received_at windows (sankofa.privacy.erasure): BRIN
-- stays tiny and costs the COPY almost nothing, since rows arrive in that order.
-- No index on customer_ref: an erasure (rare) scans the table rather than every
-- batch paying for one more btree.
CREATE INDEX transactions_received_at_brin ON transactions USING brin (received_at);
