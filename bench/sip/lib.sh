# Shared by run.sh and mem.sh: paths, the peer bench copy, databases with the
# benchmark accounts, starting and stopping gchd and Kamailio. Sourced, not
# run.

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

WORK=${WORK:-/tmp/sipbench}
SRC=${SRC:-$WORK/src}
GCHD_BIN=${GCHD_BIN:-$WORK/gchd}
SIPLOAD_BIN=${SIPLOAD_BIN:-$WORK/sipload}
PEER_SRC=${PEER_SRC:-$ROOT/../shared/peer-bench}
PEER=${PEER:-$WORK/peer}
RESULTS=${RESULTS:-$WORK/results}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
DOMAIN=${DOMAIN:-127.0.0.1}
POOL_USERS=${POOL_USERS:-1000000}
# The ports may be moved (SIP_PORT...) to run beside another bench.
SIP_PORT=${SIP_PORT:-5080}
HTTP_PORT=${HTTP_PORT:-18080}
PPROF_PORT=${PPROF_PORT:-16060}
SIPP_PORT=${SIPP_PORT:-5062}
UAS_PORT=${UAS_PORT:-5090}
KAM_PORT=5070
export DOMAIN

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# prepare: the peer bench copy with its CSVs, our injection files, the two
# binaries. Idempotent.
prepare() {
	mkdir -p "$WORK" "$RESULTS"
	if [[ ! -f $PEER/sipp/bench.py ]]; then
		[[ -d $PEER_SRC ]] || die "no peer bench at $PEER_SRC (set PEER_SRC)"
		cp -r "$PEER_SRC" "$PEER"
		chmod -R u+w "$PEER"
		(cd "$PEER" && python3 sipp/gen_csv.py)
	fi
	[[ -f $PEER/sipp/users_auth.csv ]] || (cd "$PEER" && python3 sipp/gen_csv.py)
	if [[ ! -f $WORK/pool_auth.csv ]]; then
		log "writing $POOL_USERS-user injection and account files"
		python3 - "$WORK" "$POOL_USERS" <<'EOF'
import sys
work, n = sys.argv[1], int(sys.argv[2])
def auth(u, p): return "%s;%s;[authentication username=%s password=%s]" % (u, p, u, p)
with open(work + "/pool_auth.csv", "w") as f:
    f.write("SEQUENTIAL\n")
    for i in range(1, n + 1):
        f.write(auth("user%05d" % i, "pass%05d" % i) + "\n")
with open(work + "/accounts.csv", "w") as f:
    for i in range(1, n + 1):
        f.write("user%05d,pass%05d\n" % (i, i))
    f.write("sender,x,Sender\n")
    for i in range(1, 31):
        f.write("member%02d,x,Member %02d\n" % (i, i))
for name, count in (("targets_auth.csv", 1000), ("refresh_udp.csv", 10000), ("refresh_tcp.csv", 2000)):
    with open(work + "/" + name, "w") as f:
        f.write("SEQUENTIAL\n" + "".join(auth("user%05d" % i, "pass%05d" % i) + "\n" for i in range(1, count + 1)))
with open(work + "/members_auth.csv", "w") as f:
    f.write("SEQUENTIAL\n" + "".join(auth("member%02d" % i, "x") + "\n" for i in range(1, 31)))
with open(work + "/rooms_gc1.csv", "w") as f:
    f.write("SEQUENTIAL\ngc-1;x;\n")
EOF
	fi
	if [[ ${BUILD:-1} == 1 ]]; then
		[[ -f $SRC/go.mod ]] || die "no source at $SRC: export a commit there first (see README.md)"
		log "building gchd from $SRC"
		(cd "$SRC" && go build -o "$GCHD_BIN" .)
		log "building sipload from $HERE/sipload"
		(cd "$ROOT" && go build -o "$SIPLOAD_BIN" ./bench/sip/sipload)
	fi
	[[ -x $GCHD_BIN && -x $SIPLOAD_BIN ]] || die "missing $GCHD_BIN or $SIPLOAD_BIN"
}

# DB_ID names the base database instead of the binary's hash: binaries of
# the same schema (an A/B comparison) then share one import.
bin_id() { if [[ -n ${DB_ID:-} ]]; then echo "$DB_ID"; else sha256sum "$GCHD_BIN" | cut -c1-12; fi; }

# base_db ENGINE: a database with every benchmark account, made once per
# gchd binary: an SQLite file, or a PostgreSQL template database.
base_db() {
	local id
	id=$(bin_id)
	case $1 in
	sqlite)
		BASE_SQLITE=$WORK/cache/base-$id.db
		if [[ ! -f $BASE_SQLITE ]]; then
			mkdir -p "$WORK/cache"
			rm -f "$WORK"/cache/base-*.db*
			log "importing $(wc -l <"$WORK/accounts.csv") accounts into $BASE_SQLITE"
			"$GCHD_BIN" accounts import "$WORK/accounts.csv" -database "sqlite:$BASE_SQLITE.tmp" -domain "$DOMAIN" -log-level warn >&2
			mv "$BASE_SQLITE.tmp" "$BASE_SQLITE"
		fi
		;;
	postgres)
		BASE_PG=sipbench_base_$id
		if [[ -z $(psql "$PG_URL/postgres?sslmode=disable" -Atc "SELECT 1 FROM pg_database WHERE datname = '$BASE_PG'") ]]; then
			local old
			for old in $(psql "$PG_URL/postgres?sslmode=disable" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sipbench_base_%'"); do
				psql "$PG_URL/postgres?sslmode=disable" -qc "DROP DATABASE $old" >/dev/null
			done
			log "importing $(wc -l <"$WORK/accounts.csv") accounts into PostgreSQL database $BASE_PG (about 2 minutes)"
			psql "$PG_URL/postgres?sslmode=disable" -qc "CREATE DATABASE ${BASE_PG}_tmp" >/dev/null
			"$GCHD_BIN" accounts import "$WORK/accounts.csv" -database "$PG_URL/${BASE_PG}_tmp?sslmode=disable" -domain "$DOMAIN" -log-level warn >&2
			psql "$PG_URL/postgres?sslmode=disable" -qc "ALTER DATABASE ${BASE_PG}_tmp RENAME TO $BASE_PG" >/dev/null
		fi
		;;
	esac
}

GCHD_PID=
PG_DB=
RUN_DIR=
# start_gchd ENGINE [serve flags...]: a fresh copy of the base database and
# gchd on 127.0.0.1:5080 (SIP), :18080 (HTTP), :16060 (pprof).
# ENGINE: sqlite, sqlite-normal (synchronous NORMAL) or postgres.
start_gchd() {
	local engine=$1
	shift
	RUN_DIR=$(mktemp -d "$WORK/run-XXXXXX")
	local dsn flags=()
	case $engine in
	sqlite | sqlite-normal)
		base_db sqlite
		cp "$BASE_SQLITE" "$RUN_DIR/gchd.db"
		dsn="sqlite:$RUN_DIR/gchd.db"
		if [[ $engine == sqlite-normal ]]; then flags+=(-storage-sqlite-synchronous NORMAL); fi
		;;
	postgres)
		base_db postgres
		PG_DB=sipbench_run_$$
		psql "$PG_URL/postgres?sslmode=disable" -qc "CREATE DATABASE $PG_DB TEMPLATE $BASE_PG" >/dev/null
		dsn="$PG_URL/$PG_DB?sslmode=disable"
		;;
	*) die "unknown engine $engine" ;;
	esac
	if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/healthz"; then
		die "something already answers on :$HTTP_PORT"
	fi
	# The abuse limits are off: every load comes from 127.0.0.1, far over
	# the per-source defaults, and Kamailio runs without pike.
	GCHD_ARGS=(serve -database "$dsn" -domain "$DOMAIN" -sip-addr "127.0.0.1:$SIP_PORT"
		-http-addr "127.0.0.1:$HTTP_PORT" -debug-pprof-addr "127.0.0.1:$PPROF_PORT" -log-level warn
		-limits-sip-rate 0 -limits-http-rate 0 -limits-sip-connections-per-source 0 -limits-http-connections-per-source 0 -limits-auth-failures 0
		-limits-account-failures 0 "${flags[@]}" "$@")
	log "gchd ${GCHD_ARGS[*]}"
	"$GCHD_BIN" "${GCHD_ARGS[@]}" >"$RUN_DIR/gchd.log" 2>&1 &
	GCHD_PID=$!
	for i in $(seq 1 150); do
		curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$HTTP_PORT/healthz" && return 0
		kill -0 "$GCHD_PID" 2>/dev/null || { cat "$RUN_DIR/gchd.log" >&2; die "gchd exited during start"; }
		sleep 0.2
	done
	die "gchd did not answer /healthz"
}

stop_gchd() {
	if [[ -n $GCHD_PID ]] && kill -0 "$GCHD_PID" 2>/dev/null; then
		kill -TERM "$GCHD_PID" 2>/dev/null || true
		for _ in $(seq 1 75); do kill -0 "$GCHD_PID" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$GCHD_PID" 2>/dev/null || true
		wait "$GCHD_PID" 2>/dev/null || true
		if [[ -s $RUN_DIR/gchd.log ]]; then
			log "gchd log (warnings and errors): $(wc -l <"$RUN_DIR/gchd.log") lines; last ones:"
			tail -n 5 "$RUN_DIR/gchd.log" >&2
		fi
	fi
	GCHD_PID=
	if [[ -n $PG_DB ]]; then
		psql "$PG_URL/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null || log "could not drop $PG_DB"
		PG_DB=
	fi
	if [[ -n $RUN_DIR && ${KEEP_RUN:-0} != 1 ]]; then rm -rf "$RUN_DIR"; fi
	RUN_DIR=
}

# db_query SQL: run a query on the running gchd's database.
db_query() {
	if [[ -n $PG_DB ]]; then
		psql "$PG_URL/$PG_DB?sslmode=disable" -Atc "$1"
	else
		sqlite3 "$RUN_DIR/gchd.db" "$1"
	fi
}

KAM_STARTED=
# start_kamailio VARIANT: the peer bench's Kamailio (plain, auth, imc).
start_kamailio() {
	NUSERS=${NUSERS:-$POOL_USERS} "$PEER/kamailio/run-kamailio.sh" start "$1" >&2
	KAM_STARTED=1
}

stop_kamailio() {
	if [[ -n $KAM_STARTED ]]; then
		"$PEER/kamailio/run-kamailio.sh" stop >&2 || true
		KAM_STARTED=
	fi
}

# api LOGIN PASSWORD GM PM: one API call; prints the body.
api() {
	curl -sS --max-time 10 -u "$1:$2" --data-urlencode "gm=$3" --data-urlencode "pm=$4" "http://127.0.0.1:$HTTP_PORT/gch.ashx"
}

# make_group: sender creates group 1 with member01..member30, who all join.
make_group() {
	local members= i reply
	for i in $(seq -w 1 30); do members+="${members:+,}{\"l\":\"member$i\"}"; done
	reply=$(api sender x addGroup "{\"gs\":\"room\",\"gm\":[$members]}")
	[[ $reply == '{"id":1}' ]] || die "addGroup answered $reply"
	for i in $(seq -w 1 30); do
		reply=$(api "member$i" x joinGroup '{"id":1}')
		[[ $reply == 200 ]] || die "joinGroup member$i answered $reply"
	done
	reply=$(api sender x getGroup '{"id":1}')
	[[ $(grep -o '"s":"j"' <<<"$reply" | wc -l) -eq 31 ]] || die "want 31 joined participants: $reply"
	log "group 1 (sip:gc-1@$DOMAIN): sender + member01..member30, all joined"
}

# metric NAME: the value of a metric line of gchd's /metrics (first match).
metric() {
	curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk -v m="$1" '$1 == m { print $2; exit }'
}

# stop_on_exit: on exit (or INT/TERM) stop what the script started: gchd,
# Kamailio, and whatever the script's own cleanup_extra (if defined) stops.
stop_on_exit() {
	_cleanup() {
		local rc=$?
		trap - EXIT INT TERM
		if declare -F cleanup_extra >/dev/null; then cleanup_extra; fi
		stop_gchd
		stop_kamailio
		exit "$rc"
	}
	trap _cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}
