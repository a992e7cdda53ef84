#!/usr/bin/env bash
# Memory held per registered contact: register N users (100,000) with
# digest over UDP and compare the server's memory before and after.
#
#   bench/sip/mem.sh SERVER        SERVER: sqlite | postgres | kamailio
#
# gchd: resident set (VmRSS), go_memstats_heap_inuse_bytes and
# go_memstats_heap_alloc_bytes, read after a forced garbage collection
# (/debug/pprof/heap?gc=1), 45 s for the scavenger to return freed pages and
# a second collection; once before and once SETTLE (40) s after the last
# REGISTER (sipgo keeps a finished non-INVITE transaction for 32 s, Timer J). Kamailio: its shared memory in use
# (kamcmd core.shmmem real_used), where usrloc keeps contacts, and the
# proportional set size of all its processes.
# Env: N (100000), REG_RATE (4000/s), SETTLE (40 s), SCAVENGE (45 s).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SERVER=${1:-}
case $SERVER in sqlite | postgres | kamailio) ;; *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;; esac
N=${N:-100000}
REG_RATE=${REG_RATE:-4000}
SETTLE=${SETTLE:-40}
STAMP=$(date +%Y%m%d-%H%M%S)
prepare
mkdir -p "$RESULTS"
OUT=$RESULTS/$SERVER-mem-$STAMP.log
stop_on_exit
exec > >(tee "$OUT") 2>&1

csv=$WORK/mem_$N.csv
head -n $((N + 1)) "$WORK/pool_auth.csv" >"$csv"
KAMCMD=(kamcmd -s "unix:${RUNDIR:-/tmp/kambench}/kamailio_ctl")

# gchd_mem: "rss heap_inuse heap_alloc contacts peak_rss", after a garbage
# collection, a pause for the scavenger to return freed pages to the
# system, and a second collection (of what the idle server allocated).
gchd_mem() {
	curl -s -o /dev/null "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
	sleep "${SCAVENGE:-45}"
	curl -s -o /dev/null "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
	sleep 1
	local rss heap alloc contacts hwm
	rss=$(($(awk '/^VmRSS/ { print $2 }' "/proc/$GCHD_PID/status") * 1024))
	hwm=$(($(awk '/^VmHWM/ { print $2 }' "/proc/$GCHD_PID/status") * 1024))
	heap=$(printf '%.0f' "$(metric go_memstats_heap_inuse_bytes)")
	alloc=$(printf '%.0f' "$(metric go_memstats_heap_alloc_bytes)")
	contacts=$(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | awk '/^gchd_registrar_contacts/ { n += $2 } END { print n + 0 }')
	echo "$rss $heap $alloc $contacts $hwm"
}

# kam_mem: "shm_real_used pss_sum contacts".
kam_mem() {
	local shm pss=0 p contacts
	shm=$("${KAMCMD[@]}" core.shmmem | awk '/real_used/ { print $2 }')
	for p in $(pgrep -x kamailio); do
		pss=$((pss + $(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup") * 1024))
	done
	contacts=$("${KAMCMD[@]}" stats.get_statistics location_contacts 2>/dev/null | grep -o '[0-9]*$' || echo "?")
	echo "$shm $pss $contacts"
}

echo "# $SERVER memory per binding, $N users, gchd $(cat "$SRC/.commit" 2>/dev/null || echo "?"), $(date -Is)"
if [[ $SERVER == kamailio ]]; then
	start_kamailio auth
	target=127.0.0.1:$KAM_PORT cpu=(--cpu-proc kamailio)
	sleep 2
	read -r a0 b0 c0 < <(kam_mem)
else
	start_gchd "$SERVER"
	target=127.0.0.1:$SIP_PORT cpu=(--cpu-proc gchd)
	read -r a0 b0 d0 c0 h0 < <(gchd_mem)
fi
echo "before: ${a0} ${b0} ${d0:-} contacts=${c0}"
python3 "$HERE/peer.py" --peer "$PEER" step reg_auth --rate "$REG_RATE" --dur "$(python3 -c "print($N/$REG_RATE)")" --warmup 0 \
	--target "$target" "${cpu[@]}" --users-auth-csv "$csv" --label "$SERVER-mem" --workdir "$WORK/sipp" -p 5062 --recv-timeout 10000 ||
	log "some registrations failed (see the line above)"
log "waiting ${SETTLE}s for transactions to end"
sleep "$SETTLE"
if [[ $SERVER == kamailio ]]; then
	read -r a1 b1 c1 < <(kam_mem)
	echo "after:  ${a1} ${b1} contacts=${c1}"
	awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v n="$N" -v c="$c1" 'BEGIN {
		printf "RESULT kamailio contacts=%s shm_real_used %.1f -> %.1f MB: %.0f bytes/binding; PSS of all processes %.1f -> %.1f MB: %.0f bytes/binding\n",
			c, a0 / 1048576, a1 / 1048576, (a1 - a0) / n, b0 / 1048576, b1 / 1048576, (b1 - b0) / n }'
else
	read -r a1 b1 d1 c1 h1 < <(gchd_mem)
	echo "after:  ${a1} ${b1} ${d1} contacts=${c1}"
	echo "# bindings rows: $(db_query 'SELECT COUNT(*) FROM bindings')"
	awk -v a0="$a0" -v a1="$a1" -v b0="$b0" -v b1="$b1" -v d0="$d0" -v d1="$d1" -v h="$h1" -v n="$N" -v c="$c1" -v s="$SERVER" 'BEGIN {
		printf "RESULT gchd-%s contacts=%s RSS %.1f -> %.1f MB: %.0f bytes/binding; heap in use %.1f -> %.1f MB: %.0f bytes/binding; heap live (alloc) %.1f -> %.1f MB: %.0f bytes/binding; peak RSS during the registrations %.1f MB\n",
			s, c, a0 / 1048576, a1 / 1048576, (a1 - a0) / n, b0 / 1048576, b1 / 1048576, (b1 - b0) / n, d0 / 1048576, d1 / 1048576, (d1 - d0) / n, h / 1048576 }'
	if [[ ${HEAP_PROFILE:-1} == 1 ]]; then
		curl -s -o "$RESULTS/$SERVER-mem-$STAMP.heap" "http://127.0.0.1:$PPROF_PORT/debug/pprof/heap?gc=1"
		(cd "$SRC" && go tool pprof -sample_index=inuse_space -top -nodecount=25 "$GCHD_BIN" "$RESULTS/$SERVER-mem-$STAMP.heap" 2>/dev/null) |
			sed 's/^/# heap: /' | head -n 32
	fi
fi
