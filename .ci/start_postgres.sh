#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on 127.0.0.1 and print the export line for its URL.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=${PGTEST_DIR:-/tmp/bigsister-pg}
port=${PGTEST_PORT:-55432}
if [ ! -f "$dir/PG_VERSION" ]; then
  mkdir -p "$dir"
  chown postgres:postgres "$dir" 2>/dev/null || true
  su postgres -c "$bin/initdb -D $dir -A trust -U postgres" >/dev/null 2>&1 || "$bin/initdb" -D "$dir" -A trust -U postgres >/dev/null
fi
if ! su postgres -c "$bin/pg_ctl -D $dir status" >/dev/null 2>&1; then
  # A throwaway test cluster: durability off (no fsync per commit) keeps the store's tests fast on slow disks.
  opts="-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  su postgres -c "$bin/pg_ctl -D $dir -o '$opts' -l $dir/log -w start" >/dev/null
fi
echo "export BIGSISTER_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
