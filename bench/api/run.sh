#!/usr/bin/env bash
# HTTP API load benchmark of gchd: getGroup and sendMessage under wrk.
#
#   bench/api/run.sh ENGINE [DURATION] [CONNECTIONS]
#
#   ENGINE       sqlite or postgres
#   DURATION     seconds of each measured wrk run (default 10; "10s" works too)
#   CONNECTIONS  wrk connections (default 32)
#
# See README.md in this directory for the environment variables.
set -euo pipefail

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
	exit 2
}

[[ $# -ge 1 && $# -le 3 ]] || usage
ENGINE=$1
DURATION=${2:-10}
CONNECTIONS=${3:-32}
DURATION=${DURATION%s}
[[ $ENGINE == sqlite || $ENGINE == postgres ]] || usage
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 2 ]] || { echo "run.sh: DURATION must be whole seconds >= 2" >&2; exit 2; }
[[ $CONNECTIONS =~ ^[0-9]+$ && $CONNECTIONS -ge 1 ]] || { echo "run.sh: CONNECTIONS must be a positive number" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

THREADS=${THREADS:-2}
# wrk wants at least one connection per thread.
if [[ $THREADS =~ ^[0-9]+$ ]] && ((THREADS > CONNECTIONS)); then THREADS=$CONNECTIONS; fi
CALLS=${CALLS:-getGroup sendMessage}
WARMUP=${WARMUP:-3}
MEMBERS=${MEMBERS:-10}
GROUP_COUNT=${GROUP_COUNT:-1}
SQLITE_SYNC=${SQLITE_SYNC:-FULL}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_PARAMS=${PG_PARAMS:-}
HTTP_PORT=${HTTP_PORT:-18080}
SIP_PORT=${SIP_PORT:-15060}
PPROF_PORT=${PPROF_PORT:-16060}
PROFILE=${PROFILE:-0}
LOG_LEVEL=${LOG_LEVEL:-warn}
BUILD=${BUILD:-1}
SRC=${SRC:-$ROOT}
BIN=${GCHD_BIN:-/tmp/gchd-bench/gchd}
OUT=${OUT:-/tmp/gchd-bench/results-$ENGINE-$(date +%Y%m%d-%H%M%S)-$$}
DOMAIN=bench.local
PASSWORD=bench-password
BASE=http://127.0.0.1:$HTTP_PORT

[[ $MEMBERS =~ ^[0-9]+$ && $MEMBERS -ge 2 ]] || { echo "run.sh: MEMBERS must be a number >= 2" >&2; exit 2; }
[[ $GROUP_COUNT =~ ^[0-9]+$ && $GROUP_COUNT -ge 1 ]] || { echo "run.sh: GROUP_COUNT must be a positive number" >&2; exit 2; }
[[ $WARMUP =~ ^[0-9]+$ ]] || { echo "run.sh: WARMUP must be whole seconds" >&2; exit 2; }

for tool in wrk curl; do
	command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done
if [[ $ENGINE == postgres ]]; then
	command -v psql >/dev/null || { echo "run.sh: psql is not installed" >&2; exit 1; }
fi

mkdir -p "$OUT"
SERVER_PID=
PG_DB=
PROFILE_PID=
WRK_PID=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $WRK_PID ]] && kill -0 "$WRK_PID" 2>/dev/null; then
		kill "$WRK_PID" 2>/dev/null || true
		wait "$WRK_PID" 2>/dev/null || true
	fi
	if [[ -n $PROFILE_PID ]] && kill -0 "$PROFILE_PID" 2>/dev/null; then
		kill "$PROFILE_PID" 2>/dev/null || true
	fi
	if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -TERM "$SERVER_PID" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$SERVER_PID" 2>/dev/null || break
			sleep 0.2
		done
		if kill -0 "$SERVER_PID" 2>/dev/null; then
			echo "run.sh: gchd did not stop in 10 s; killing it" >&2
			kill -KILL "$SERVER_PID" 2>/dev/null || true
		fi
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	if [[ -n $PG_DB ]]; then
		psql "$PG_URL/postgres?sslmode=disable" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 ||
			echo "run.sh: could not drop database $PG_DB" >&2
	fi
	if [[ $rc -ne 0 && -f $OUT/gchd.log ]]; then
		echo "--- last lines of $OUT/gchd.log" >&2
		tail -n 20 "$OUT/gchd.log" >&2 || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '== %s\n' "$*" >&2; }

# Refuse to run against something already listening on the port.
if curl -s -o /dev/null --max-time 1 "$BASE/healthz"; then
	echo "run.sh: something already answers on $BASE; set HTTP_PORT" >&2
	exit 1
fi

if [[ $BUILD == 1 ]]; then
	log "building gchd from $SRC into $BIN"
	mkdir -p "$(dirname "$BIN")"
	(cd "$SRC" && go build -o "$BIN" .)
fi
[[ -x $BIN ]] || { echo "run.sh: $BIN is not an executable" >&2; exit 1; }

case $ENGINE in
sqlite)
	DSN="sqlite:$OUT/gchd.db"
	ENGINE_FLAGS=(-storage-sqlite-synchronous "$SQLITE_SYNC")
	LABEL="sqlite sync=$SQLITE_SYNC"
	;;
postgres)
	PG_DB="gchd_bench_$$"
	log "creating database $PG_DB"
	psql "$PG_URL/postgres?sslmode=disable" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >/dev/null
	DSN="$PG_URL/$PG_DB?sslmode=disable$PG_PARAMS"
	ENGINE_FLAGS=()
	LABEL="postgres${PG_PARAMS:+ params=$PG_PARAMS}"
	;;
esac

gchd() { "$BIN" "$@" -database "$DSN" -domain "$DOMAIN" -log-level warn; }

log "adding $MEMBERS accounts"
for i in $(seq 1 "$MEMBERS"); do
	printf '%s\n' "$PASSWORD" | gchd accounts add "u$i" >/dev/null
done

# The abuse limits are off: every request comes from 127.0.0.1, far over
# the per-source rate (http_rate), which would answer 429. So are the
# account quotas: u1 creates every group and invites members who never
# register a phone.
SERVE_FLAGS=(-http-addr "127.0.0.1:$HTTP_PORT" -sip-addr "127.0.0.1:$SIP_PORT"
	-limits-http-rate 0 -limits-sip-connections-per-source 0 -limits-http-connections-per-source 0 -limits-auth-failures 0 -limits-account-failures 0
	-chat-max-groups-per-hour 0 -chat-max-pending-per-sender 0)
if [[ $PROFILE == 1 ]]; then
	SERVE_FLAGS+=(-debug-pprof-addr "127.0.0.1:$PPROF_PORT")
fi
log "starting gchd ($LABEL)"
"$BIN" serve -database "$DSN" -domain "$DOMAIN" -log-level "$LOG_LEVEL" "${SERVE_FLAGS[@]}" "${ENGINE_FLAGS[@]}" >"$OUT/gchd.log" 2>&1 &
SERVER_PID=$!

for i in $(seq 1 100); do
	if curl -sf -o /dev/null --max-time 1 "$BASE/healthz"; then
		break
	fi
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		echo "run.sh: gchd exited during start" >&2
		exit 1
	fi
	if [[ $i == 100 ]]; then
		echo "run.sh: gchd did not answer /healthz in 20 s" >&2
		exit 1
	fi
	sleep 0.2
done

# api LOGIN GM PM: one API call; prints the body, fails unless HTTP 200.
api() {
	curl -sS --fail-with-body --max-time 10 -u "$1:$PASSWORD" \
		--data-urlencode "gm=$2" --data-urlencode "pm=$3" "$BASE/gch.ashx"
}

log "creating $GROUP_COUNT group(s) of $MEMBERS members"
members=
for i in $(seq 2 "$MEMBERS"); do
	members+="${members:+,}{\"l\":\"u$i\"}"
done
GROUP_IDS=
for g in $(seq 1 "$GROUP_COUNT"); do
	reply=$(api u1 addGroup "{\"gs\":\"bench $g\",\"gm\":[$members]}")
	id=$(sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p' <<<"$reply")
	[[ -n $id ]] || { echo "run.sh: addGroup answered $reply" >&2; exit 1; }
	for i in $(seq 2 "$MEMBERS"); do
		reply=$(api "u$i" joinGroup "{\"id\":$id}")
		[[ $reply == 200 ]] || { echo "run.sh: joinGroup u$i answered $reply" >&2; exit 1; }
	done
	for i in $(seq 1 5); do
		reply=$(api "u$(( (i - 1) % MEMBERS + 1 ))" sendMessage "{\"id\":$id,\"mb\":\"hello $i\"}")
		[[ $reply == 200 ]] || { echo "run.sh: sendMessage answered $reply" >&2; exit 1; }
	done
	reply=$(api u1 getGroup "{\"id\":$id}")
	joined=$(grep -o '"s":"j"' <<<"$reply" | wc -l)
	[[ $joined -eq $MEMBERS ]] || { echo "run.sh: want $MEMBERS joined members, getGroup answered $reply" >&2; exit 1; }
	GROUP_IDS+="${GROUP_IDS:+,}$id"
done
log "group(s) $GROUP_IDS: $MEMBERS joined members each, 5 messages; getGroup answers ${#reply} bytes"

TOKENS=()
for i in $(seq 1 "$MEMBERS"); do
	TOKENS+=("$(printf 'u%s:%s' "$i" "$PASSWORD" | base64 -w0)")
done

CLK_TCK=$(getconf CLK_TCK)
# cpu_ticks PID: user+system clock ticks of a process.
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
# children_ticks: user+system clock ticks of the reaped children of this
# shell (wrk, once it has exited).
children_ticks() { awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"; }
# busy_ticks: non-idle clock ticks of the whole machine.
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
now_ns() { date +%s%N; }
# postgres_ns: "pid nanoseconds-on-CPU" of every process named postgres (all
# clusters and databases of the host, so other users of PostgreSQL count
# too). schedstat is exact where the tick counts of /proc/PID/stat are not.
postgres_ns() {
	local f pid comm ns rest
	for f in /proc/[0-9]*/comm; do
		{ read -r comm <"$f"; } 2>/dev/null || continue
		[[ $comm == postgres ]] || continue
		pid=${f#/proc/}
		pid=${pid%/comm}
		{ read -r ns rest <"/proc/$pid/schedstat"; } 2>/dev/null || continue
		echo "$pid $ns"
	done
}
# ns_delta BEFORE AFTER: CPU time between two postgres_ns outputs (processes
# that started in between count in full; those that ended are lost).
ns_delta() {
	awk 'NR == FNR { before[$1] = $2; next } { d += $2 - before[$1] } END { printf "%d\n", d }' \
		<(printf '%s\n' "$1") <(printf '%s\n' "$2")
}

script_of() {
	case $1 in
	getGroup) echo "$HERE/getgroup.lua" ;;
	sendMessage) echo "$HERE/sendmessage.lua" ;;
	*) echo "run.sh: unknown call $1 (want getGroup or sendMessage)" >&2; exit 2 ;;
	esac
}

# bench CALL SECONDS TAG: one wrk run; the measured ones print a summary.
bench() {
	local call=$1 secs=$2 tag=$3 script file
	script=$(script_of "$call")
	file="$OUT/$tag-$call.txt"
	local cpu0 busy0 t0 cpu1 busy1 t1 pg0= pg1= wrk0 wrk1
	if [[ $tag == run && $PROFILE == 1 ]]; then
		curl -s --max-time $((secs + 10)) -o "$OUT/$call.pprof" \
			"http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$((secs - 1))" &
		PROFILE_PID=$!
	fi
	if [[ $ENGINE == postgres ]]; then pg0=$(postgres_ns); fi
	wrk0=$(children_ticks)
	cpu0=$(cpu_ticks "$SERVER_PID"); busy0=$(busy_ticks); t0=$(now_ns)
	# In the background, so that a signal to this script is handled at once.
	wrk -t"$THREADS" -c"$CONNECTIONS" -d"${secs}s" --timeout 10s --latency -s "$script" "$BASE" -- "$GROUP_IDS" "${TOKENS[@]}" >"$file" &
	WRK_PID=$!
	wait "$WRK_PID" || { echo "run.sh: wrk failed; see $file" >&2; exit 1; }
	WRK_PID=
	cpu1=$(cpu_ticks "$SERVER_PID"); busy1=$(busy_ticks); t1=$(now_ns)
	wrk1=$(children_ticks)
	if [[ $ENGINE == postgres ]]; then pg1=$(postgres_ns); fi
	kill -0 "$SERVER_PID" 2>/dev/null || { echo "run.sh: gchd died during the $call run" >&2; exit 1; }
	[[ $tag == run ]] || return 0

	cat "$file"
	local result server_cores wrk_cores machine_busy
	result=$(sed -n 's/^RESULT //p' "$file")
	[[ -n $result ]] || { echo "run.sh: wrk printed no RESULT line; see $file" >&2; exit 1; }
	server_cores=$(awk -v d=$((cpu1 - cpu0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", d / hz / (ns / 1e9) }')
	wrk_cores=$(awk -v d=$((wrk1 - wrk0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", d / hz / (ns / 1e9) }')
	machine_busy=$(awk -v d=$((busy1 - busy0)) -v hz="$CLK_TCK" -v ns=$((t1 - t0)) -v n="$(nproc)" 'BEGIN { printf "%.0f", 100 * d / hz / (ns / 1e9) / n }')
	local pg_cores=
	if [[ $ENGINE == postgres ]]; then
		pg_cores=$(awk -v d="$(ns_delta "$pg0" "$pg1")" -v ns=$((t1 - t0)) 'BEGIN { printf "%.2f", d / ns }')
	fi
	local line="engine=$ENGINE"
	if [[ -n $PG_PARAMS ]]; then line+=" pg_params=$PG_PARAMS"; fi
	if [[ $ENGINE == sqlite ]]; then line+=" sync=$SQLITE_SYNC"; fi
	line+=" call=$call groups=$GROUP_COUNT connections=$CONNECTIONS threads=$THREADS $result server_cpu_cores=$server_cores"
	if [[ -n $pg_cores ]]; then line+=" postgres_cpu_cores=$pg_cores"; fi
	line+=" wrk_cpu_cores=$wrk_cores machine_busy_pct=$machine_busy"
	echo "SUMMARY $line" | tee -a "$OUT/summary.txt"
	if [[ $result != *" errors_connect=0 errors_read=0 errors_write=0 errors_timeout=0 non2xx=0" ]]; then
		echo "run.sh: WARNING: the $call run had errors; see $OUT/gchd.log" >&2
	fi
	if [[ -n $PROFILE_PID ]]; then
		wait "$PROFILE_PID" || true
		PROFILE_PID=
		if [[ -s $OUT/$call.pprof ]]; then
			(cd "$ROOT" && go tool pprof -top -nodecount=40 "$BIN" "$OUT/$call.pprof") >"$OUT/$call.top.txt" 2>&1 || true
			(cd "$ROOT" && go tool pprof -top -cum -nodecount=40 "$BIN" "$OUT/$call.pprof") >"$OUT/$call.topcum.txt" 2>&1 || true
			log "profile: $OUT/$call.pprof, top: $OUT/$call.top.txt"
		fi
	fi
}

for call in $CALLS; do
	script_of "$call" >/dev/null
	log "$call: warm-up ${WARMUP}s, then ${DURATION}s with $CONNECTIONS connections, $THREADS threads"
	if [[ $WARMUP -gt 0 ]]; then bench "$call" "$WARMUP" warmup; fi
	bench "$call" "$DURATION" run
done

log "results in $OUT"
