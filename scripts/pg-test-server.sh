#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster for tests, from Debian's postgresql package.
#
#   scripts/pg-test-server.sh start DIR   # prints postgresql://postgres@127.0.0.1:PORT/ompq_test
#   scripts/pg-test-server.sh stop DIR
#
# The cluster lives in DIR/data, listens on 127.0.0.1 on a free port (and on a unix
# socket in DIR), trusts loopback connections and keeps its log in DIR/postgres.log.
# PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (DIR is
# chowned to it). Only the URL goes to stdout; progress goes to stderr.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
DB_NAME=ompq_test

usage() {
  echo "usage: $0 start|stop DIR" >&2
  exit 2
}

[ $# -eq 2 ] || usage
command=$1
dir=$2

# Runs a command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# A TCP port nobody listens on now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "pg-test-server: $PG_BIN/initdb not found; install Debian's postgresql package" \
      "(apt-get install postgresql) or set PG_BIN" >&2
    exit 1
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/data/postmaster.pid" ]; then
    echo "pg-test-server: a cluster is already running in $dir; stop it first" >&2
    exit 1
  fi
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$dir"
    chmod 700 "$dir"
  fi
  rm -rf "$dir/data"
  # Trust on loopback and the socket only: a throwaway cluster for tests, never exposed.
  as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync \
    --encoding=UTF8 --locale=C >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    exit 1
  }
  local port
  port=$(free_port)
  # fsync off: test data need not survive a power cut, and it makes tests much faster.
  if ! as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
    start >&2; then
    echo "pg-test-server: postgres did not start; its log:" >&2
    cat "$dir/postgres.log" >&2 || true
    exit 1
  fi
  echo "$port" >"$dir/port"
  as_owner "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
  echo "postgresql://postgres@127.0.0.1:$port/$DB_NAME"
}

stop() {
  if [ ! -f "$dir/data/postmaster.pid" ]; then
    echo "pg-test-server: no cluster running in $dir" >&2
    return 0
  fi
  # fast: disconnect clients and stop at once; a test cluster has nothing to flush.
  as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2
}

case "$command" in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
