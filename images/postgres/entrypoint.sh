#!/bin/sh
# First start: initdb with POSTGRES_USER/PASSWORD, create POSTGRES_DB, run /docker-entrypoint-initdb.d
# (*.sql through psql, *.sh sourced) against a server that listens only on its socket. Then serve.
set -eu
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
: "${POSTGRES_USER:=postgres}" "${POSTGRES_DB:=$POSTGRES_USER}"
mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
# The socket folder may be a fresh tmpfs (a read-only root): the server must own it, as the official image does.
mkdir -p /var/run/postgresql && chown postgres:postgres /var/run/postgresql && chmod 2775 /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
  pw=$(mktemp) && printf '%s' "$POSTGRES_PASSWORD" > "$pw" && chown postgres "$pw"
  as_pg initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 -E UTF8 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  as_pg pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k /var/run/postgresql" -w start >/dev/null
  psql() { as_pg env PGHOST=/var/run/postgresql psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-psqlrc "$@"; }
  if [ "$POSTGRES_DB" != postgres ]; then psql --dbname postgres -c "CREATE DATABASE \"$POSTGRES_DB\""; fi
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sql) echo "initdb: $f"; psql --dbname "$POSTGRES_DB" -f "$f" ;;
      *.sh) echo "initdb: $f"; . "$f" ;;
    esac
  done
  as_pg pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
if [ "$1" = postgres ]; then
  shift
  # As the official image does: the server inherits this environment, untouched (what mfe-deploy renders
  # must keep secrets out of it; the tests prove it on this stand-in).
  exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
