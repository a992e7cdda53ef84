#!/usr/bin/env bash
# Fan-out and relayed MESSAGEs on N gchd nodes sharing one PostgreSQL.
#
#   bench/cluster/run.sh N [fanout|relay]
#
# A fresh database, accounts sender, member01..30, user00001..00100, group 1
# (sender + 30 members) made through the API, N nodes each in a CPU cgroup
# of CPU_PCT per cent of one core (cgroup v2 cpu.max, else v1
# cpu.cfs_quota_us, else none: say so), then sipload with the members (or
# the relay targets) spread over the nodes. Env: RATES (comma list), DUR,
# CPU_PCT (50), GCHD_BIN, SIPLOAD_BIN, PG_URL, OUT (results file).
set -euo pipefail
N=${1:?N nodes} MODE=${2:-fanout}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
WORK=${WORK:-/tmp/clusterbench}
GCHD_BIN=${GCHD_BIN:-$WORK/gchd} SIPLOAD_BIN=${SIPLOAD_BIN:-$WORK/sipload}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
CPU_PCT=${CPU_PCT:-50} DUR=${DUR:-8s} RATES=${RATES:-50,100}
OUT=${OUT:-$WORK/results.log}
DB=clusterbench_$$ DSN="$PG_URL/clusterbench_$$?sslmode=disable"
mkdir -p "$WORK"
if [[ ${BUILD:-1} == 1 ]]; then
	(cd "$ROOT" && go build -o "$GCHD_BIN" . && go build -o "$SIPLOAD_BIN" ./bench/sip/sipload)
fi
PIDS=() CG=()
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	for c in "${CG[@]}"; do rmdir "$c" 2>/dev/null || true; done
	psql "$PG_URL/postgres?sslmode=disable" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null || true
}
trap cleanup EXIT
psql "$PG_URL/postgres?sslmode=disable" -qc "CREATE DATABASE $DB" >/dev/null
{
	echo "sender,x,Sender"
	for i in $(seq -w 1 30); do echo "member$i,x,Member $i"; done
	for i in $(seq 1 100); do printf 'user%05d,pass%05d\n' "$i" "$i"; done
} >"$WORK/accounts.csv"
"$GCHD_BIN" accounts import "$WORK/accounts.csv" -database "$DSN" -domain 127.0.0.1 -log-level warn
# cgroup_of NAME: a cgroup limited to CPU_PCT % of one core; prints its procs file.
cgroup_of() {
	local d
	if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
		d=/sys/fs/cgroup/clusterbench-$1
		mkdir -p "$d" && echo "$((CPU_PCT * 1000)) 100000" >"$d/cpu.max"
	elif [[ -w /sys/fs/cgroup/cpu ]]; then
		d=/sys/fs/cgroup/cpu/clusterbench-$1
		mkdir -p "$d" && echo 100000 >"$d/cpu.cfs_period_us" && echo "$((CPU_PCT * 1000))" >"$d/cpu.cfs_quota_us"
	else
		echo "# no writable cpu cgroup: nodes unlimited" >&2
		return
	fi
	CG+=("$d")
	echo "$d/cgroup.procs"
}
SERVERS= APIS= METRICS= PIDLIST=
for i in $(seq 1 "$N"); do
	procs=$(cgroup_of "node$i")
	GCHD_DATABASE=$DSN GCHD_DOMAIN=127.0.0.1 GCHD_REGISTRAR_NODE=node$i GCHD_SIP_ADDR=127.0.0.1:$((5160 + 10 * i)) \
		GCHD_HTTP_ADDR=127.0.0.1:$((18180 + i)) GCHD_SIP_ADVERTISE=127.0.0.1 GCHD_LOG_LEVEL=warn \
		"$GCHD_BIN" serve -chat-max-participants 31 -sip-trusted 127.0.0.0/8 -limits-sip-rate 0 -limits-http-rate 0 \
		-limits-sip-connections-per-source 0 -limits-http-connections-per-source 0 -limits-auth-failures 0 \
		-limits-account-failures 0 >"$WORK/node$i.log" 2>&1 &
	PIDS+=($!)
	[[ -n $procs ]] && echo "$!" >"$procs"
	SERVERS+="${SERVERS:+,}127.0.0.1:$((5160 + 10 * i))"
	APIS+="${APIS:+,}http://127.0.0.1:$((18180 + i))/gch.ashx"
	METRICS+="${METRICS:+,}http://127.0.0.1:$((18180 + i))/metrics"
	PIDLIST+="${PIDLIST:+,}$!"
done
for i in $(seq 1 "$N"); do
	for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$((18180 + i))/healthz" && break; sleep 0.2; done
done
api() { curl -sS -u "$1:$2" --data-urlencode "gm=$3" --data-urlencode "pm=$4" "http://127.0.0.1:18181/gch.ashx"; }
members=
for i in $(seq -w 1 30); do members+="${members:+,}{\"l\":\"member$i\"}"; done
[[ $(api sender x addGroup "{\"gs\":\"room\",\"gm\":[$members]}") == '{"id":1}' ]] || { echo "addGroup failed" >&2; exit 1; }
for i in $(seq -w 1 30); do [[ $(api "member$i" x joinGroup '{"id":1}') == 200 ]] || { echo "join member$i failed" >&2; exit 1; }; done
echo "# $(date -Is) N=$N mode=$MODE cpu=${CPU_PCT}% of a core per node ($(cd "$ROOT" && git rev-parse --short HEAD))" | tee -a "$OUT"
if [[ $MODE == fanout ]]; then
	"$SIPLOAD_BIN" fanout -servers "$SERVERS" -api "$APIS" -metrics "$METRICS" -pid "$PIDLIST" -db-proc postgres \
		-rates "$RATES" -dur "$DUR" -retries 0 -bisect 0 | tee -a "$OUT"
else
	# A phone on node 1 sends to users registered on node N (node 1 with N=1).
	last=${SERVERS##*,}
	"$SIPLOAD_BIN" relay -server "${SERVERS%%,*}" -uas-server "$last" -metrics "$METRICS" -pid "$PIDLIST" -db-proc postgres \
		-rates "$RATES" -dur "$DUR" | tee -a "$OUT"
fi
