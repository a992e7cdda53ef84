#!/usr/bin/env bash
# Two commits of gchd side by side in one run: A B A B..., each step at the
# same fixed rate, so that the machine's noise falls on both alike.
#
#   bench/sip/ab.sh REV_A REV_B
#
# Env: TESTS="test transport rate;..." (default: REGISTER of new users and
# refreshes, MESSAGE relay, room fan-out, all over UDP), ROUNDS (2), DUR (10).
# Prints, per test, server CPU / SIPp CPU of each step and the ratio B/A of
# their means: below 1, B costs less per request. Run it on a quiet machine.
# SUMMARY_ONLY=1 prints the table of the last run again.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[[ $# -eq 2 ]] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
AB=${AB_WORK:-/tmp/sipbench-ab}
mkdir -p "$AB"
IFS=';' read -ra tests <<<"${TESTS:-reg_auth udp 2000;refresh udp 3000;msg udp 2000;room udp 300}"
if [[ ${SUMMARY_ONLY:-0} != 1 ]]; then
for side in A B; do
	rev=$1
	shift
	src=$AB/$side/src
	rm -rf "$src"
	mkdir -p "$src"
	git -C "$ROOT" archive "$rev" | tar -x -C "$src"
	git -C "$ROOT" rev-parse --short "$rev" >"$src/.commit"
	(cd "$src" && go build -o "$AB/$side/gchd" .)
	git -C "$ROOT" rev-parse --short "$rev" >"$AB/$side/rev"
done
# One load tool for both: the newer one.
(cd "$ROOT" && go build -o "$AB/sipload" ./bench/sip/sipload)

for round in $(seq 1 "${ROUNDS:-2}"); do
	for t in "${tests[@]}"; do
		read -r test transport rate <<<"$t"
		for side in A B; do
			WORK=$AB/$side/work SRC=$AB/$side/src GCHD_BIN=$AB/$side/gchd SIPLOAD_BIN=$AB/sipload BUILD=0 RESULTS=$AB/results \
				RATES=$rate DUR=${DUR:-10} LABEL_SUFFIX=-$side "$HERE/run.sh" "$test" sqlite "$transport" \
				>"$AB/$side-$test-$transport-$round.out" 2>&1 || echo "step failed: $side $test $transport round $round (see $AB/$side-$test-$transport-$round.out)"
		done
	done
done
fi

# The step rows: srvCPU and sippCPU of the fixed-rate step.
python3 - "$AB" "${tests[@]}" <<'PY'
import glob, re, sys, statistics
ab, tests = sys.argv[1], sys.argv[2:]
revs = {s: open(f"{ab}/{s}/rev").read().strip() for s in "AB"}
print(f"A = {revs['A']}, B = {revs['B']}; server CPU / SIPp (or sipload) CPU per step (lower is cheaper)")
for t in tests:
    test, transport, rate = t.split()
    ratios = {}
    for s in "AB":
        vals = []
        for f in sorted(glob.glob(f"{ab}/{s}-{test}-{transport}-*.out")):
            for line in open(f):
                m = re.search(r"rate=\s*%s\b.*srvCPU=\s*([\d.]+)%%\s+(?:sipp|load)CPU=\s*([\d.]+)%%.*\b(PASS|FAIL)" % rate, line)
                if m and "warm-up" not in line and float(m.group(2)) > 0:
                    vals.append((float(m.group(1)) / float(m.group(2)), m.group(3)))
        ratios[s] = vals
    a = [v for v, _ in ratios["A"]]
    b = [v for v, _ in ratios["B"]]
    fails = sum(1 for s in "AB" for _, ok in ratios[s] if ok != "PASS")
    r = statistics.mean(b) / statistics.mean(a) if a and b else float("nan")
    print(f"{test:9} {transport} {rate:>5}/s  A {', '.join('%.2f' % v for v in a):30}  B {', '.join('%.2f' % v for v in b):30}  B/A {r:.3f}" + (f"  ({fails} steps failed)" if fails else ""))
PY
