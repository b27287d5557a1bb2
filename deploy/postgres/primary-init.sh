#!/bin/bash
# Run once by the official postgres image, when the primary's data directory is
# first created (/docker-entrypoint-initdb.d): a role for streaming replication,
# a physical slot so that the primary keeps the WAL its replica has not
# received yet, and a pg_hba.conf line letting the replica connect.
set -euo pipefail
: "${POSTGRES_REPLICATION_PASSWORD:?set POSTGRES_REPLICATION_PASSWORD}"

psql -v ON_ERROR_STOP=1 -v password="$POSTGRES_REPLICATION_PASSWORD" \
    --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'password';
SELECT pg_create_physical_replication_slot('replica_1');
SQL

# "all" in pg_hba.conf's database column does not cover replication connections.
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
