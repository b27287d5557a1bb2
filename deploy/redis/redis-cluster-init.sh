#!/bin/sh
# One-shot (docker-compose.yml's redis-cluster-init): join the nodes named in
# REDIS_NODES (host or host:port, port 6379 by default) into one cluster, the
# 16384 hash slots split evenly between them. Does nothing when they already
# form one, so `docker compose up` may run it again. REDIS_REPLICAS replicas
# per master (default 0: then every node is a master). redis-cli reads the
# password from REDISCLI_AUTH.
set -eu
: "${REDIS_NODES:?list the nodes, e.g. REDIS_NODES='redis-1 redis-2 redis-3'}"

host_of() { echo "${1%%:*}"; }
port_of() { case "$1" in *:*) echo "${1##*:}" ;; *) echo 6379 ;; esac; }
cli() { node=$1; shift; redis-cli -h "$(host_of "$node")" -p "$(port_of "$node")" "$@"; }

first=${REDIS_NODES%% *}
for node in $REDIS_NODES; do
    until cli "$node" ping 2>/dev/null | grep -q PONG; do sleep 1; done
done

if cli "$first" cluster info | grep -q '^cluster_state:ok'; then
    echo "redis cluster already formed"
    exit 0
fi

# `--cluster create` wants addresses; the nodes then announce their names
# (cluster-preferred-endpoint-type hostname).
addresses=""
for node in $REDIS_NODES; do
    host=$(host_of "$node")
    ip=$(getent hosts "$host" | awk '{print $1; exit}')
    addresses="$addresses ${ip:-$host}:$(port_of "$node")"
done
# shellcheck disable=SC2086 # one argument per address
redis-cli --cluster create $addresses --cluster-replicas "${REDIS_REPLICAS:-0}" --cluster-yes

until cli "$first" cluster info | grep -q '^cluster_state:ok'; do sleep 1; done
echo "redis cluster formed:"
cli "$first" cluster nodes
