#!/usr/bin/env bash
# What PostgreSQL alone does with sendMessage's statements: pgbench runs
# the transactions gchd runs for a batch of posts to one group (lock the
# group, insert the events with 9 deliveries each, commit), with no gchd
# in the way, on 8 connections over 8 groups. The ceiling of the write
# path on this machine, whatever the server does (docs/PERFORMANCE.md).
#
#   bench/api/pgfloor.sh [SECONDS]
#
# Env: GCHD_BIN (built from the checkout if unset), PG_URL, CLIENTS (8).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DUR=${1:-10}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
CLIENTS=${CLIENTS:-8}
WORK=$(mktemp -d)
DB=gchd_pgfloor_$$
PGBENCH=$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -1)
[[ -x $PGBENCH ]] || { echo "pgfloor.sh: pgbench not found (Debian package postgresql)" >&2; exit 1; }
trap 'psql "$PG_URL/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null; rm -rf "$WORK"' EXIT
if [[ -z ${GCHD_BIN:-} ]]; then
	GCHD_BIN=$WORK/gchd
	(cd "$ROOT" && go build -o "$GCHD_BIN" .)
fi
psql "$PG_URL/postgres?sslmode=disable" -qc "CREATE DATABASE $DB" >/dev/null
{
	echo "sender,x,S"
	for i in $(seq 1 9); do echo "m$i,x,M"; done
} >"$WORK/accounts.csv"
# The import migrates the database: the schema is gchd's own.
"$GCHD_BIN" accounts import "$WORK/accounts.csv" -database "$PG_URL/$DB?sslmode=disable" -domain bench -log-level warn >/dev/null
psql "$PG_URL/$DB?sslmode=disable" -qc "INSERT INTO chat_groups (subject, owner, created_at, avatar_at, video_at)
	SELECT 'g' || i, 'sender', 0, 0, 0 FROM generate_series(1, 8) i"

one="WITH e AS (INSERT INTO events (group_id, kind, sender, sender_dn, body, ref, created_at, origin, content_type)
	VALUES (:g, 'MSG', 'sender', 'S', 'hello there text', 0, 1, '', 'text/plain') RETURNING mid),
	d AS (INSERT INTO deliveries (mid, login, sender) SELECT e.mid, l, '' FROM e, unnest('{m1,m2,m3,m4,m5,m6,m7,m8,m9}'::text[]) AS l)
	SELECT mid FROM e;"
multi() {
	echo "WITH e AS (INSERT INTO events (group_id, kind, sender, sender_dn, body, ref, created_at, origin, content_type)
	SELECT :g, 'MSG', 'sender', 'S', 'hello there text', 0, 1, '', 'text/plain' FROM generate_series(1, $1) RETURNING mid)
	$2;"
}
deliveries="INSERT INTO deliveries (mid, login, sender) SELECT e.mid, l, '' FROM e, unnest('{m1,m2,m3,m4,m5,m6,m7,m8,m9}'::text[]) AS l"
script() { # NAME BODY: a transaction locking a random group around BODY
	printf '\\set g random(1, 8)\nBEGIN;\nSELECT id FROM chat_groups WHERE id = :g FOR UPDATE;\n%s\nCOMMIT;\n' "$2" >"$WORK/$1.sql"
}
script each4 "$one $one $one $one"
script each8 "$one $one $one $one $one $one $one $one"
script multi4 "$(multi 4 "$deliveries")"
script multi8 "$(multi 8 "$deliveries")"
script events4 "$(multi 4 "SELECT count(*) FROM e")"
printf '%-8s %6s %10s  %s\n' script posts tx/s posts/s
for s in each4:4 each8:8 multi4:4 multi8:8 events4:4; do
	name=${s%:*} posts=${s#*:}
	tps=$("$PGBENCH" "$PG_URL/$DB?sslmode=disable" -n -M prepared -c "$CLIENTS" -j 2 -T "$DUR" -f "$WORK/$name.sql" 2>&1 |
		sed -n 's/^tps = \([0-9.]*\).*/\1/p')
	printf '%-8s %6d %10.0f %10.0f\n' "$name" "$posts" "$tps" "$(awk -v t="$tps" -v p="$posts" 'BEGIN { print t * p }')"
done
