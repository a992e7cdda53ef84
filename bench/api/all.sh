#!/usr/bin/env bash
# Runs the configurations of docs/PERFORMANCE.md, each REPEAT times, and
# prints every SUMMARY line at the end (also kept in $OUT_ALL/summary.txt).
#
#   bench/api/all.sh [DURATION] [CONNECTIONS]     (default 10 s, 32)
#
# REPEAT (default 3) sets the number of rounds; the rounds interleave the
# configurations, so that a burst of noise on the machine hits only one
# sample of each. Report the median.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DURATION=${1:-10}
CONNECTIONS=${2:-32}
REPEAT=${REPEAT:-3}
BIN=${GCHD_BIN:-/tmp/gchd-bench/gchd}
SRC=${SRC:-$ROOT}
OUT_ALL=${OUT_ALL:-/tmp/gchd-bench/all-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT_ALL" "$(dirname "$BIN")"

echo "== building gchd from $SRC into $BIN" >&2
(cd "$SRC" && go build -o "$BIN" .)
if git -C "$SRC" rev-parse HEAD >/dev/null 2>&1; then
	echo "source: $(git -C "$SRC" describe --always --dirty)" | tee "$OUT_ALL/source.txt" >&2
fi
export BUILD=0 GCHD_BIN=$BIN

# Each configuration: environment assignments, then the engine.
configs=(
	"SQLITE_SYNC=FULL sqlite"
	"SQLITE_SYNC=NORMAL CALLS=sendMessage sqlite"
	"postgres"
	"PG_PARAMS=&binary_parameters=yes postgres"
	"GROUP_COUNT=8 CALLS=sendMessage postgres"
)

for round in $(seq 1 "$REPEAT"); do
	for cfg in "${configs[@]}"; do
		read -r -a words <<<"$cfg"
		engine=${words[-1]}
		unset 'words[-1]'
		echo "== round $round: ${cfg}" >&2
		env "${words[@]}" OUT="$OUT_ALL/r$round-${cfg//[^A-Za-z0-9=]/_}" \
			"$HERE/run.sh" "$engine" "$DURATION" "$CONNECTIONS" 2>&1 |
			grep '^SUMMARY ' | tee -a "$OUT_ALL/summary.txt"
	done
done

echo "== all results in $OUT_ALL/summary.txt" >&2
