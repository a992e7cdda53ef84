#!/usr/bin/env bash
# Copies a gchd SQLite database into an empty PostgreSQL database.
#
# usage: sqlite-to-postgres.sh SQLITE_FILE POSTGRES_URL [GCHD_BINARY]
#   e.g. sqlite-to-postgres.sh /var/lib/gchd/gchd.db \
#          'postgres://gchd:secret@127.0.0.1:5432/gchd?sslmode=disable' /usr/local/bin/gchd
#
# Stop gchd first: the copy is of a snapshot, and whatever is written after
# it would be lost. The script
#   1. takes a consistent snapshot of the SQLite file (sqlite3 .backup) and
#      brings it to the binary's schema version (gchd migrate);
#   2. creates the schema in PostgreSQL with the same binary (gchd migrate)
#      and refuses a target that already holds accounts, groups or events;
#   3. copies every table in one transaction (accounts with their digests,
#      groups, members, events, deliveries with their receipts, avatars and
#      videos, registrations, the nonce secret) and moves the ID sequences
#      past the highest ID SQLite ever handed out, so that IDs of deleted
#      groups and messages are not reused;
#   4. compares the row counts of both sides.
# The SQLite file is only read. Needs sqlite3 and psql.
set -euo pipefail

if [[ $# -lt 2 ]]; then
	sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
fi
SRC=$1
DST=$2
GCHD=${3:-gchd}
for tool in sqlite3 psql "$GCHD"; do
	command -v "$tool" >/dev/null || {
		echo "$tool not found" >&2
		exit 1
	}
done
[[ -f $SRC ]] || {
	echo "no such file: $SRC" >&2
	exit 1
}
case $DST in
postgres://* | postgresql://*) ;;
*)
	echo "POSTGRES_URL must start with postgres://" >&2
	exit 2
	;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gchd-copy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
chmod 700 "$WORK"

# psql (libpq) rejects lib/pq's own URL parameters.
PSQL_URL=$(sed -E 's/([?&])binary_parameters=[^&]*&?/\1/; s/[?&]$//' <<<"$DST")
psql_q() { psql "$PSQL_URL" -X -v ON_ERROR_STOP=1 -At "$@"; }

echo "snapshot of $SRC"
sqlite3 "$SRC" ".backup '$WORK/snapshot.db'"
"$GCHD" migrate -database "sqlite:$WORK/snapshot.db" >/dev/null
echo "schema in PostgreSQL"
"$GCHD" migrate -database "$DST"

v_src=$(sqlite3 "$WORK/snapshot.db" "SELECT MAX(version) FROM schema_migrations")
v_dst=$(psql_q -c "SELECT MAX(version) FROM schema_migrations")
if [[ $v_src != "$v_dst" ]]; then
	echo "schema versions differ: SQLite $v_src, PostgreSQL $v_dst" >&2
	exit 1
fi
used=$(psql_q -c "SELECT (SELECT COUNT(*) FROM accounts) + (SELECT COUNT(*) FROM chat_groups) + (SELECT COUNT(*) FROM events)")
if [[ $used != 0 ]]; then
	echo "the PostgreSQL database already holds data: copy only into an empty one" >&2
	exit 1
fi

# Parents before children (foreign keys).
TABLES=(accounts chat_groups members events deliveries media bindings settings)
{
	echo "BEGIN;"
	# A fresh schema has the nonce secret only once gchd ran; replace it.
	echo "DELETE FROM settings;"
	for t in "${TABLES[@]}"; do
		cols=$(sqlite3 "$WORK/snapshot.db" "SELECT group_concat(name, ', ') FROM pragma_table_info('$t')")
		[[ -n $cols ]] || {
			echo "table $t missing in SQLite" >&2
			exit 1
		}
		# BLOBs in bytea's hex input format (\x0123...).
		select=$(sqlite3 "$WORK/snapshot.db" "SELECT group_concat(CASE WHEN type = 'BLOB' THEN '''\\x'' || hex(' || name || ')' ELSE name END, ', ') FROM pragma_table_info('$t')")
		sqlite3 -batch "$WORK/snapshot.db" >"$WORK/$t.csv" <<-EOF
			.mode csv
			.separator "," "\n"
			SELECT $select FROM $t;
		EOF
		# Empty strings must stay empty strings, not NULL.
		echo "\\copy $t ($cols) FROM '$WORK/$t.csv' WITH (FORMAT csv, FORCE_NOT_NULL ($cols))"
	done
	for seq in chat_groups:id events:mid; do
		t=${seq%%:*} c=${seq##*:}
		hi=$(sqlite3 "$WORK/snapshot.db" "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '$t'), 0), COALESCE((SELECT MAX($c) FROM $t), 0))")
		if [[ $hi -gt 0 ]]; then
			echo "SELECT setval(pg_get_serial_sequence('$t', '$c'), $hi);"
		fi
	done
	echo "COMMIT;"
} >"$WORK/copy.sql"

echo "copying"
psql_q -q -f "$WORK/copy.sql" >/dev/null

status=0
for t in "${TABLES[@]}"; do
	a=$(sqlite3 "$WORK/snapshot.db" "SELECT COUNT(*) FROM $t")
	b=$(psql_q -c "SELECT COUNT(*) FROM $t")
	printf '  %-12s SQLite %8s  PostgreSQL %8s\n' "$t" "$a" "$b"
	[[ $a == "$b" ]] || status=1
done
if [[ $status != 0 ]]; then
	echo "row counts differ" >&2
	exit 1
fi
echo "done: point gchd's database setting at the PostgreSQL URL and start it"
