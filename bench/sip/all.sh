#!/usr/bin/env bash
# Every row of the SIP sections of docs/PERFORMANCE.md, Kamailio and gchd
# one after the other for each test, then the memory and latency runs.
#
#   bench/sip/all.sh [ROUNDS]      (default 1; about 2 hours a round)
#
# Env: REF (commit to measure, default HEAD; exported with git archive into
# $WORK/src unless SRC is set), TESTS (subset, e.g. "msg room"), and those
# of run.sh. Logs: $WORK/results/; summary: $WORK/results/summary-*.txt.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=${WORK:-/tmp/sipbench}
ROUNDS=${1:-1}
TESTS=${TESTS:-reg_auth refresh msg room fanout mem latency}

if [[ -z ${SRC:-} ]]; then
	rev=$(git -C "$ROOT" rev-parse --short "${REF:-HEAD}")
	rm -rf "$WORK/src"
	mkdir -p "$WORK/src"
	git -C "$ROOT" archive "$rev" | tar -x -C "$WORK/src"
	echo "$rev" >"$WORK/src/.commit"
	export SRC=$WORK/src
	echo "== measuring commit $rev (exported to $SRC)"
fi
export WORK
mkdir -p "$WORK/results"
SUMMARY=$WORK/results/summary-$(date +%Y%m%d-%H%M%S).txt

# run TEST SERVER TRANSPORT: one run.sh; its result lines go to the summary.
run() {
	local pattern='^(MAX|# delivery rows)'
	if [[ $1 == latency ]]; then pattern='^fanout rate='; fi
	"$HERE/run.sh" "$@" | tee /dev/stderr | grep -E "$pattern" | sed "s/^/$* ${RATE:+(RATE=$RATE) }| /" >>"$SUMMARY" || true
	export BUILD=0 # built once
}

has() { [[ " $TESTS " == *" $1 "* ]]; }

for round in $(seq 1 "$ROUNDS"); do
	echo "== round $round of $ROUNDS" | tee -a "$SUMMARY"
	for t in reg_auth refresh msg; do
		has "$t" || continue
		for tr in udp tcp; do
			for s in kamailio sqlite postgres; do
				run "$t" "$s" "$tr"
			done
		done
	done
	if has reg_auth; then run reg_auth sqlite-normal udp; fi
	if has room; then
		for s in kamailio sqlite postgres sqlite-normal; do run room "$s" udp; done
	fi
	if has fanout; then
		for s in sqlite postgres sqlite-normal; do run fanout "$s" udp; done
	fi
done
if has mem; then
	for s in sqlite postgres kamailio; do
		"$HERE/mem.sh" "$s" | tee /dev/stderr | grep '^RESULT' >>"$SUMMARY" || true
		export BUILD=0
	done
fi
if has latency; then
	# At half of the highest passing fan-out rate of the last round.
	for s in sqlite postgres; do
		max=$(grep -h "^fanout $s udp | MAX fanout:" "$SUMMARY" | tail -n 1 | sed -n 's/.*MAX fanout: \([0-9]*\) messages.*/\1/p')
		[[ -n $max ]] || { echo "== no fanout maximum for $s: skipping latency"; continue; }
		RATE=$(((max / 2 + 5) / 10 * 10)) run latency "$s" udp
	done
fi
# The template databases of the accounts (the per-run ones are dropped by run.sh).
for db in $(psql "${PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres?sslmode=disable" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'sipbench_%'"); do
	psql "${PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres?sslmode=disable" -qc "DROP DATABASE $db" && echo "== dropped $db"
done
echo "== summary: $SUMMARY"
cat "$SUMMARY"
