#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on 127.0.0.1 for the tests.
#   bash .ci/start_postgres.sh         start it (initdb on first use) and print the export lines for its URL and
#                                      data directory (BIGSISTER_TEST_POSTGRES_URL, BIGSISTER_TEST_POSTGRES_DIR)
#   bash .ci/start_postgres.sh stop    stop it, cutting open connections (the database-outage test does this,
#                                      then starts it again)
# PGTEST_DIR (default /tmp/bigsister-pg) and PGTEST_PORT (default 55432) choose the cluster.
set -euo pipefail
action=${1:-start}
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=${PGTEST_DIR:-/tmp/bigsister-pg}
port=${PGTEST_PORT:-55432}

# pg_ctl refuses to run as root: as root, run it as the postgres user.
as_postgres() {
  if [ "$(id -u)" = "0" ]; then su postgres -c "$1"; else bash -c "$1"; fi
}

case "$action" in
  start)
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"
      chown postgres:postgres "$dir" 2>/dev/null || true
      su postgres -c "$bin/initdb -D $dir -A trust -U postgres" >/dev/null 2>&1 || "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
    fi
    if ! as_postgres "$bin/pg_ctl -D $dir status" >/dev/null 2>&1; then
      # A throwaway test cluster: durability off (no fsync per commit) keeps the store's tests fast on slow disks.
      opts="-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
      as_postgres "$bin/pg_ctl -D $dir -o '$opts' -l $dir/log -w start" >/dev/null
    fi
    echo "export BIGSISTER_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    echo "export BIGSISTER_TEST_POSTGRES_DIR=$dir"
    ;;
  stop)
    if as_postgres "$bin/pg_ctl -D $dir status" >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl -D $dir -m fast -w stop" >/dev/null
    fi
    ;;
  *)
    echo "usage: $0 [start|stop]" >&2
    exit 2
    ;;
esac
