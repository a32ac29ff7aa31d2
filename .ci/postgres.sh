#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL server on 127.0.0.1 for the distributed-search tests.
#   .ci/postgres.sh start DIR PORT   -> prints the URL to use (trust auth, database "prunenas")
#   .ci/postgres.sh stop DIR
# Installs Debian's postgresql package when its binaries are missing. As root, the server runs as
# the "postgres" user (PostgreSQL refuses to run as root).
set -euo pipefail
cmd=$1 dir=$2 port=${3:-55432}

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$d" ]; then
    echo "installing PostgreSQL from Debian's packages" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
    d=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$d"
}

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
  start)
    bin=$(bindir)
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >/dev/null
    as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres prunenas
    echo "postgresql://postgres@127.0.0.1:$port/prunenas"
    ;;
  stop)
    bin=$(bindir)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
  *)
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
    ;;
esac
