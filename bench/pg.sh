# PostgreSQL on 127.0.0.1 for the benchmarks' baselines: sourced by bench scripts that set
# WORK (a scratch directory, removed by their cleanup). pg_start sets PGPORT and PGHOST and
# registers the server for pg_stop; durability as shipped (fsync, synchronous_commit=on).

PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_start() {
  [ -n "$PG_BIN" ] || { echo "PostgreSQL is missing (apt-get install postgresql)" >&2; return 1; }
  PGDIR="$WORK/pg"
  mkdir -p "$PGDIR"
  if [ "$(id -u)" = 0 ]; then chown postgres "$PGDIR"; chmod 755 "$WORK"; fi
  as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust > "$PGDIR/initdb.log"
  PGPORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  PGHOST=127.0.0.1
  export PGPORT PGHOST PGUSER=postgres
  as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -o \
    "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
     -c max_connections=300 -c shared_buffers=1GB -c work_mem=256MB -c maintenance_work_mem=1GB" \
    start > /dev/null
}

pg_stop() {
  [ -n "${PGDIR:-}" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -m immediate stop > /dev/null 2>&1 || true
}

pg_version() {
  psql -d postgres -Atc "SHOW server_version" 2>/dev/null | cut -d' ' -f1
}
