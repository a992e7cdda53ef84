#!/usr/bin/env bash
# CPU cost of the server per transaction, measured against SIPp's own:
# for each run.sh log given, the step at RATE, the server's CPU and SIPp's,
# and their ratio.
#
#   bench/sip/cpucost.sh RATE LOG...
#
# SIPp does the same work per transaction whatever the server, so its CPU
# at a fixed rate is a ruler for the machine's speed at that moment. The
# virtual machines this was written on drifted by a quarter in speed from
# one run to the next; the ratio did not (±3 %), so a change of a few per
# cent shows in it where a max-rate search cannot tell it from the drift.
# Compare runs at one rate below the maximum, alternating the binaries.
# For PostgreSQL the server's CPU is gchd's alone (the backends are not
# counted).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
rate=$1
shift
for f in "$@"; do
	line=$(grep -E "rate= *$rate achieved" "$f" | head -n 1) || true
	[[ -n $line ]] || { printf '%s: no step at %s/s\n' "$f" "$rate" >&2; continue; }
	srv=$(sed -E 's/.*srvCPU= *([0-9.]+)%.*/\1/' <<<"$line")
	sipp=$(sed -E 's/.*sippCPU= *([0-9.]+)%.*/\1/' <<<"$line")
	awk -v f="$(basename "$f")" -v s="$srv" -v p="$sipp" \
		'BEGIN { printf "%-60s server %6.1f %%  SIPp %5.1f %%  ratio %.3f\n", f, s, p, s / p }'
done
