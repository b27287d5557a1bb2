#!/bin/bash
# Profile the service's worker processes under load (docs/performance.md, "Where the time goes").
#
#   bash benchmarks/profile_service.sh [RATE] [OUT] [BATCH]
#
# Starts `sankofa serve --workers 2` on a scratch database and Redis prefix, sends RATE
# requests per second (default 1000) of BATCH transactions each (default 1: POST
# /v1/transactions; more: /v1/transactions/batch) from `sankofa loadtest run`,
# samples every worker with py-spy (`pip install py-spy`; needs ptrace, i.e. root or
# kernel.yama.ptrace_scope=0) for 20 s, keeps the collapsed stacks, then sums the
# samples by component into a table and a PNG (benchmarks/profile_summary.py).
# Stops everything it started and deletes its database and Redis keys.
set -euo pipefail
RATE=${1:-1000}
OUT=${2:-loadtest-results/profile}
BATCH=${3:-1}
BIN=${BIN:-.venv/bin}
PORT=${PORT:-8311}
DB=sankofa_profile_$$
ADMIN=${SANKOFA_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
mkdir -p "$OUT"
admin_sql() {  # one statement on the admin database
  "$BIN/python" - "$ADMIN" "$1" <<'PY'
import asyncio, sys, asyncpg
async def go():
    c = await asyncpg.connect(sys.argv[1])
    await c.execute(sys.argv[2])
    await c.close()
asyncio.run(go())
PY
}
admin_sql "CREATE DATABASE \"$DB\""
SANKOFA_DATABASE_URL="${ADMIN%/*}/$DB" SANKOFA_REDIS_URL=${SANKOFA_REDIS_URL:-redis://127.0.0.1:6379/0} \
SANKOFA_REDIS_PREFIX="profile$$" SANKOFA_LOG_LEVEL=warning \
  "$BIN/sankofa" serve --port "$PORT" --workers 2 > "$OUT/service.log" 2>&1 &
SERVE=$!
cleanup() {
  kill "$SERVE" 2>/dev/null || true; wait "$SERVE" 2>/dev/null || true
  admin_sql "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" || true
  "$BIN/python" - "profile$$" <<'PY' || true
import os, sys, redis
client = redis.Redis.from_url(os.environ.get("SANKOFA_REDIS_URL", "redis://127.0.0.1:6379/0"))
keys = list(client.scan_iter(match=f"{sys.argv[1]}:*", count=5000))
for i in range(0, len(keys), 1000):
    client.delete(*keys[i : i + 1000])
PY
}
trap cleanup EXIT
for _ in $(seq 120); do
  curl -fs "http://127.0.0.1:$PORT/health/ready" >/dev/null && break; sleep 0.5
done
WORKERS=$(pgrep -P "$SERVE")
"$BIN/sankofa" loadtest run --url "http://127.0.0.1:$PORT" --rate "$RATE" --batch "$BATCH" --duration "${DURATION:-30}" \
  --warmup 5 --out "$OUT" --label profile-load --no-plots --quiet &
LOAD=$!
sleep 8
SPIES=()
for w in $WORKERS; do
  "$BIN/py-spy" record --pid "$w" --duration 20 --rate 200 --nonblocking \
    --output "$OUT/worker-$w.collapsed" --format raw >/dev/null 2>&1 &
  SPIES+=($!)
done
wait "$LOAD" "${SPIES[@]}"
curl -fs "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt" || true
"$BIN/python" benchmarks/profile_summary.py --png "$OUT/profile.png" "$OUT"/worker-*.collapsed | tee "$OUT/summary.md"
