-- OAuth 2.0 clients (sankofa.auth.clients). The secret is stored only as an
-- scrypt hash; roles are checked here too, so a bad row cannot be written by
-- hand either.
CREATE TABLE IF NOT EXISTS auth_clients (
    client_id    text PRIMARY KEY CHECK (client_id ~ '^cl_[0-9a-f]{16}$'),
    name         text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9._-]{1,64}$'),
    roles        text[] NOT NULL CHECK (
                     cardinality(roles) > 0
                     AND roles <@ ARRAY['scorer', 'analyst', 'admin', 'auditor']::text[]
                 ),
    rate_per_s   double precision CHECK (rate_per_s IS NULL OR rate_per_s > 0),
    secret_hash  text NOT NULL CHECK (secret_hash LIKE 'scrypt$%'),
    created_at   timestamptz NOT NULL DEFAULT now()
);
