package registrar

import (
	"testing"
	"time"
)

// The writer waits only while REGISTERs contend for it, and never longer
// than what is left of commitGap.
func TestCommitDelay(t *testing.T) {
	for _, tc := range []struct {
		name       string
		prevWrites int
		sinceLast  time.Duration
		want       time.Duration
	}{
		{"first commit", 0, time.Hour, 0},
		{"quiet: last commit took one write", 1, 0, 0},
		{"busy, just committed", 2, 0, commitGap},
		{"busy, part of the gap gone", 40, commitGap / 3, commitGap - commitGap/3},
		{"busy, gap over", 40, commitGap, 0},
		{"busy, long ago", 512, time.Second, 0},
	} {
		if got := commitDelay(tc.prevWrites, tc.sinceLast); got != tc.want {
			t.Errorf("%s: commitDelay(%d, %v) = %v, want %v", tc.name, tc.prevWrites, tc.sinceLast, got, tc.want)
		}
	}
}
