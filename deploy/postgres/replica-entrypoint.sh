#!/bin/bash
# The read replica (docker-compose.yml's postgres-replica, run as user postgres).
# First start: copy the primary with pg_basebackup; -R writes standby.signal and
# primary_conninfo, so the copy starts as a hot standby streaming from the
# primary through the slot primary-init.sh created. Later starts find the data
# directory and just run. Read-only: the service sends it reads, never writes.
set -euo pipefail
: "${PRIMARY_HOST:?set PRIMARY_HOST}" "${POSTGRES_REPLICATION_PASSWORD:?set POSTGRES_REPLICATION_PASSWORD}"
PGDATA=${PGDATA:-/var/lib/postgresql/data}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    export PGPASSWORD="$POSTGRES_REPLICATION_PASSWORD"
    until pg_isready -q -h "$PRIMARY_HOST" -U replicator; do sleep 1; done
    pg_basebackup -h "$PRIMARY_HOST" -U replicator -D "$PGDATA" \
        --wal-method=stream --slot=replica_1 --write-recovery-conf --checkpoint=fast
    chmod 0700 "$PGDATA"
    unset PGPASSWORD
fi

# hot_standby_feedback: long reads on the replica (backtests) do not get
# cancelled by the primary's vacuum removing rows they still see.
exec postgres -c hot_standby=on -c hot_standby_feedback=on
