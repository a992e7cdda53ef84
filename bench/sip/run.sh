#!/usr/bin/env bash
# SIP benchmark of gchd beside Kamailio, with the peer bench's SIPp runner.
#
#   bench/sip/run.sh TEST SERVER [TRANSPORT]
#
#   TEST       reg_auth  REGISTER + digest, every REGISTER a user without a binding
#              refresh   REGISTER + digest of users already registered from the same flow
#              msg       MESSAGE relay UAC -> server -> UAS (1,000 registered users)
#              room      group of 30 (Kamailio imc room1, gchd gc-1), posted to over SIP
#              fanout    gchd only: the same group, posted to over the HTTP API (sipload)
#              latency   gchd only: fanout at one rate (RATE=...) for 20 s, latency percentiles
#   SERVER     kamailio | sqlite | sqlite-normal | postgres
#   TRANSPORT  udp (default) | tcp
#
# Env: RATES="a b c" (explicit rates; room/fanout too), START, FACTOR, BISECT,
# DUR (8), FIRST_RATE (refresh: rate of the first pass, 2000), PROFILE_RATE=R (instead of a max search: one step at R with a CPU
# profile of gchd), GCHD_FLAGS (extra gchd serve flags), LABEL_SUFFIX, CPU_PROC (the
# name of the gchd process, for another binary), SIP_PORT, HTTP_PORT, PPROF_PORT, SIPP_PORT,
# UAS_PORT (to run beside another bench), DB_ID (lib.sh).
# See README.md.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[[ $# -ge 2 ]] || usage
TEST=$1 SERVER=$2 TRANSPORT=${3:-udp}
case $TEST in reg_auth | refresh | msg | room | fanout | latency) ;; *) usage ;; esac
case $SERVER in kamailio | sqlite | sqlite-normal | postgres) ;; *) usage ;; esac
case $TRANSPORT in udp) SIPP_T=u1 ;; tcp) SIPP_T=t1 ;; *) usage ;; esac
if [[ $SERVER == kamailio && ($TEST == fanout || $TEST == latency) ]]; then die "$TEST is gchd only"; fi

DUR=${DUR:-8}
LABEL=${SERVER}-${TRANSPORT}-${TEST}${LABEL_SUFFIX:-}
STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS"
OUT=$RESULTS/$LABEL-$STAMP.log

prepare
UAS_PID=
PROFILE_PID=
cleanup_extra() {
	[[ -n $PROFILE_PID ]] && kill "$PROFILE_PID" 2>/dev/null
	if [[ -n $UAS_PID ]] && kill -0 "$UAS_PID" 2>/dev/null; then
		kill -TERM "$UAS_PID" 2>/dev/null || true
		wait "$UAS_PID" 2>/dev/null || true
	fi
}
stop_on_exit

PEERPY=(python3 "$HERE/peer.py" --peer "$PEER")
if [[ $SERVER == kamailio ]]; then
	COMMON=(--target "127.0.0.1:$KAM_PORT" --cpu-proc kamailio)
else
	COMMON=(--target "127.0.0.1:$SIP_PORT" --cpu-proc "${CPU_PROC:-gchd}")
fi
COMMON+=(--transport "$SIPP_T" --workdir "$WORK/sipp" --uas-port "$UAS_PORT")

# profile_gchd DELAY SECONDS: a CPU profile of gchd in the background, and
# beside it the allocations made over the same seconds.
profile_gchd() {
	PROF=$RESULTS/$LABEL-$STAMP-$PROFILE_RATE.pprof
	(sleep "$1" &&
		curl -s -o "${PROF%.pprof}.allocs.pprof" "http://127.0.0.1:$PPROF_PORT/debug/pprof/allocs?seconds=$2" &
		sleep "$1" && curl -s -o "$PROF" "http://127.0.0.1:$PPROF_PORT/debug/pprof/profile?seconds=$2"
		wait) &
	PROFILE_PID=$!
}

profile_report() {
	wait "$PROFILE_PID" || true
	PROFILE_PID=
	(cd "$SRC" && go tool pprof -top -nodecount=45 "$GCHD_BIN" "$PROF" >"${PROF%.pprof}.top.txt" 2>&1 &&
		go tool pprof -top -cum -nodecount=70 "$GCHD_BIN" "$PROF" >"${PROF%.pprof}.topcum.txt" 2>&1 &&
		go tool pprof -top -sample_index=alloc_space -nodecount=45 "$GCHD_BIN" "${PROF%.pprof}.allocs.pprof" \
			>"${PROF%.pprof}.allocs.txt" 2>&1) || true
	log "profile: $PROF (listings: ${PROF%.pprof}.top.txt, .topcum.txt; allocations: .allocs.txt)"
	head -n 35 "${PROF%.pprof}.top.txt"
}

# search TEST [bench.py options...]: the max search of bench.py, or with
# PROFILE_RATE one 20 s step at that rate while gchd is profiled for 8 s
# from 12 s after the start (past the UAS start, registrations and warm-up).
search() {
	local test=$1
	shift
	if [[ -n ${PROFILE_RATE:-} ]]; then
		[[ $SERVER != kamailio ]] || die "PROFILE_RATE profiles gchd"
		profile_gchd 12 8
		"${PEERPY[@]}" "${PRE[@]}" step "$test" --rate "$PROFILE_RATE" "${COMMON[@]}" --dur 20 --label "$LABEL-profile" "$@" || true
		profile_report
		return
	fi
	local ramp=()
	if [[ -n ${RATES:-} ]]; then
		# shellcheck disable=SC2206
		ramp=(--rates $RATES --bisect "${BISECT:-0}")
	else
		ramp=(--start "${START:-$DEF_START}" --factor "${FACTOR:-$DEF_FACTOR}" --bisect "${BISECT:-3}")
	fi
	"${PEERPY[@]}" "${PRE[@]}" max "$test" "${ramp[@]}" "${COMMON[@]}" --dur "$DUR" --label "$LABEL" "$@"
}

exec > >(tee "$OUT") 2>&1
PRE=()
# shellcheck disable=SC2206
EXTRA=(${GCHD_FLAGS:-})
echo "# $LABEL  $(date -Is)  gchd $(cd "$SRC" && cat .commit 2>/dev/null || echo "?")  $(sipp -v 2>/dev/null | grep -o 'SIPp v[0-9.]*' | head -1)"
case $TEST in
reg_auth)
	DEF_START=2000 DEF_FACTOR=1.5
	if [[ $SERVER == kamailio ]]; then start_kamailio auth; else start_gchd "$SERVER" "${EXTRA[@]}"; fi
	PRE=(--fresh-users "$WORK/pool_auth.csv")
	search reg_auth
	;;
refresh)
	DEF_START=2000 DEF_FACTOR=1.5
	if [[ $SERVER == kamailio ]]; then start_kamailio auth; else start_gchd "$SERVER" "${EXTRA[@]}"; fi
	csv=$WORK/refresh_$TRANSPORT.csv
	n=$(($(wc -l <"$csv") - 1))
	# Every load SIPp sends from port 5062, so that over UDP a second
	# pass comes from the flow of the first. A TCP connection ends with
	# its SIPp: each step's first pass over the users moves them to the
	# new connection; the rest of the step is refreshes.
	log "first pass: registering $n users from $csv"
	first=${FIRST_RATE:-2000} # a cold PostgreSQL may need less
	"${PEERPY[@]}" step reg_auth --rate "$first" "${COMMON[@]}" --dur "$(python3 -c "print($n/$first)")" \
		--warmup 0 --users-auth-csv "$csv" --label "$LABEL-firstpass" -p "$SIPP_PORT" ||
		die "first pass failed"
	search reg_auth --users-auth-csv "$csv" -p "$SIPP_PORT"
	;;
msg)
	DEF_START=2000 DEF_FACTOR=1.25
	if [[ $SERVER == kamailio ]]; then
		start_kamailio plain
		target=127.0.0.1:$KAM_PORT
	else
		start_gchd "$SERVER" -sip-trusted 127.0.0.0/8 "${EXTRA[@]}"
		target=127.0.0.1:$SIP_PORT
	fi
	PRE=(--uac-sf "$HERE/message_uac.xml")
	if [[ $TRANSPORT == udp ]]; then
		# The peer bench's own SIPp UAS on :5090; its targets
		# register with digest for gchd.
		if [[ $SERVER == kamailio ]]; then
			search msg
		else
			search msg --auth-setup --targets-csv "$WORK/targets_auth.csv"
		fi
	else
		# Over TCP gchd reaches a phone only over the connection it
		# registered on: sipload registers the 1,000 targets over one
		# connection and answers there (and on :5090 for Kamailio).
		"$SIPLOAD_BIN" uas -server "$target" -domain "$DOMAIN" -transport tcp -listen "127.0.0.1:$UAS_PORT" \
			-count 1000 -stats 127.0.0.1:18190 >"$WORK/uas-$STAMP.log" 2>&1 &
		UAS_PID=$!
		for _ in $(seq 1 100); do grep -q '^# ready' "$WORK/uas-$STAMP.log" && break; kill -0 "$UAS_PID" || break; sleep 0.2; done
		grep -q '^# ready' "$WORK/uas-$STAMP.log" || { cat "$WORK/uas-$STAMP.log"; die "sipload uas did not start"; }
		head -n 1 "$WORK/uas-$STAMP.log"
		PRE+=(--external-uas http://127.0.0.1:18190/count)
		search msg
	fi
	;;
room)
	[[ $TRANSPORT == udp ]] || die "room runs over UDP (Kamailio imc sends over UDP)"
	DEF_START=100 DEF_FACTOR=1.25
	PRE=(--uac-sf "$HERE/message_uac.xml")
	if [[ $SERVER == kamailio ]]; then
		start_kamailio imc
		RATES=${RATES:-100 130 150 170 190 210 230 250}
		search room
	else
		start_gchd "$SERVER" -sip-trusted 127.0.0.0/8 -chat-max-participants 31 "${EXTRA[@]}"
		make_group
		PRE+=(--rooms-csv "$WORK/rooms_gc1.csv")
		RATES=${RATES:-100 150 200 250 300 350 400 450 500 600 700 800 900 1000}
		search room --auth-setup --members-csv "$WORK/members_auth.csv"
		echo "# delivery rows by state: $(db_query "SELECT state || '=' || COUNT(*) FROM deliveries GROUP BY state" | tr '\n' ' ')"
	fi
	;;
fanout | latency)
	start_gchd "$SERVER" -chat-max-participants 31 "${EXTRA[@]}"
	make_group
	args=(-server "127.0.0.1:$SIP_PORT" -domain "$DOMAIN" -transport "$TRANSPORT" -listen 127.0.0.1:5091
		-api "http://127.0.0.1:$HTTP_PORT/gch.ashx" -metrics "http://127.0.0.1:$HTTP_PORT/metrics"
		-pid "$GCHD_PID" -label "$LABEL" -out "$RESULTS/fanout.tsv")
	if [[ -n ${PROFILE_RATE:-} ]]; then
		profile_gchd 8 "$((DUR - 2))"
		"$SIPLOAD_BIN" fanout "${args[@]}" -rates "$PROFILE_RATE" -dur "${DUR}s" -retries 0 -bisect 0 || true
		profile_report
	elif [[ $TEST == latency ]]; then
		[[ -n ${RATE:-} ]] || die "latency needs RATE=messages/s"
		"$SIPLOAD_BIN" fanout "${args[@]}" -rates "$RATE" -dur "${DUR_LATENCY:-20s}" -retries 0 -bisect 0
	elif [[ -n ${RATES:-} ]]; then
		"$SIPLOAD_BIN" fanout "${args[@]}" -rates "${RATES// /,}" -dur "${DUR}s" -bisect "${BISECT:-0}"
	else
		"$SIPLOAD_BIN" fanout "${args[@]}" -start "${START:-100}" -factor "${FACTOR:-1.25}" -dur "${DUR}s" -bisect "${BISECT:-3}"
	fi
	echo "# delivery rows by state: $(db_query "SELECT state || '=' || COUNT(*) FROM deliveries GROUP BY state" | tr '\n' ' ')"
	;;
esac
if [[ -n $GCHD_PID ]]; then
	echo "# gchd RSS $(($(awk '/VmRSS/ { print $2 }' "/proc/$GCHD_PID/status") / 1024)) MB, heap in use $(($(printf '%.0f' "$(metric go_memstats_heap_inuse_bytes)") / 1048576)) MB, $(grep -c . "$RUN_DIR/gchd.log" || true) log lines"
	echo "# gchd counters: $(curl -s "http://127.0.0.1:$HTTP_PORT/metrics" | grep -E '^gchd_(registrar_registrations_total|delivery_attempts_total|limits_rejections_total|sip_auth_failures_total)' | sed 's/^gchd_//' | tr '\n' ' ')"
	grep -v "^$" "$RUN_DIR/gchd.log" | sed "s/^time=[^ ]* //" | cut -c1-300 | sort | uniq -c | sort -rn | head -n 5 | sed 's/^/# gchd log: /' || true
fi
echo "# udp: $(awk '/^Udp:/ { if (h) print; h = 1 }' /proc/net/snmp)"
log "log: $OUT; step rows: $PEER/results/$LABEL.tsv (fanout: $RESULTS/fanout.tsv)"
