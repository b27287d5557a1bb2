#!/bin/sh
# Before / after for docs/rules-and-cache.md: benchmarks/rules_batch_cost.py on a
# fresh scratch database each run, three rounds of (main, this tree with nothing
# configured, this tree configured), interleaved so the machine's load hits all.
#   MAIN_SRC=../main/src benchmarks/rules_batch_cost.sh > docs/results/rules_batch_cost.txt
set -eu
PY=${PY:-.venv/bin/python}
PG=${PG:-postgresql://postgres@127.0.0.1}
REDIS=${REDIS:-redis://127.0.0.1:6379/5}
MAIN_SRC=${MAIN_SRC:?set MAIN_SRC to the src/ of the tree to compare with}
for round in 1 2 3; do
  for m in main none configured; do
    db=sankofa_rules_bench_$m
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null 2>&1
    src=src; flag=""
    [ "$m" = main ] && src=$MAIN_SRC
    [ "$m" = configured ] && flag=--configured
    SANKOFA_DATABASE_URL=$PG/$db SANKOFA_REDIS_URL=$REDIS PYTHONPATH=$src \
      $PY benchmarks/rules_batch_cost.py $flag | grep '^| [0-9]\|^batch' | sed "s/^/$m /"
    psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1
  done
done
