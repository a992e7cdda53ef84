package storage

import (
	"sync"
	"testing"
	"time"
)

// A leader waits out the spacing only after a batch of several items: an
// uncontended caller runs at once.
func TestBatcherSpacing(t *testing.T) {
	p := &pace{spacing: time.Hour} // a wait would time the test out
	q := batcher[int]{pace: p}
	q.do(1, 8, func([]int) {})
	q.do(2, 8, func([]int) {})

	p.spacing = 50 * time.Millisecond
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		q.do(3, 8, func([]int) { close(started); <-release })
	}()
	<-started
	var mu sync.Mutex
	var batches [][]int
	var begun []time.Time
	record := func(b []int) {
		mu.Lock()
		defer mu.Unlock()
		batches = append(batches, append([]int(nil), b...))
		begun = append(begun, time.Now())
	}
	for _, item := range []int{4, 5} {
		wg.Add(1)
		go func() { defer wg.Done(); q.do(item, 8, record) }()
	}
	for queued := 0; queued < 3; {
		time.Sleep(time.Millisecond)
		q.mu.Lock()
		queued = len(q.queue)
		q.mu.Unlock()
	}
	close(release) // 4 and 5 now run as one batch, after a batch of one: no wait
	wg.Wait()
	q.do(6, 8, record) // after a batch of two: waits
	if len(batches) != 2 || len(batches[0]) != 2 || len(batches[1]) != 1 {
		t.Fatalf("batches = %v, want [[4 5] [6]]", batches)
	}
	if gap := begun[1].Sub(begun[0]); gap < p.spacing {
		t.Errorf("batch after a batch of two began %v after it, want at least %v", gap, p.spacing)
	}
}

// The rule: a leader waits only while callers contend, and never longer
// than what is left of the spacing. (The registrar's writer had it as
// commitDelay; every batcher has it now.)
func TestSpacingWait(t *testing.T) {
	const spacing = commitSpacing
	for _, tc := range []struct {
		name      string
		prev      int
		running   int
		full      bool
		sinceLast time.Duration
		want      time.Duration
	}{
		{"first commit", 0, 0, false, time.Hour, 0},
		{"quiet: last commit took one write", 1, 0, false, 0, 0},
		{"busy, just committed", 2, 0, false, 0, spacing},
		{"busy, part of the gap gone", 40, 0, false, spacing / 3, spacing - spacing/3},
		{"busy, gap over", 40, 0, false, spacing, 0},
		{"busy, long ago", 512, 0, false, time.Second, 0},
		{"a batch of one still runs", 1, 1, false, 0, spacing},
		{"a full batch waits", 40, 0, true, 0, 0},
	} {
		if got := spacingWait(spacing, tc.prev, tc.running, tc.full, tc.sinceLast); got != tc.want {
			t.Errorf("%s: spacingWait(%v, %d, %d, %v, %v) = %v, want %v", tc.name, spacing, tc.prev, tc.running, tc.full, tc.sinceLast, got, tc.want)
		}
	}
}

// Two batchers that share a pace space their batches together: a leader
// waits while the other's batch runs (chat updates and binding changes on
// the one SQLite writer).
func TestBatchersSharePace(t *testing.T) {
	p := &pace{spacing: 50 * time.Millisecond}
	a, b := batcher[int]{pace: p}, batcher[int]{pace: p}
	var aBegun, bBegun time.Time
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.do(1, 8, func([]int) { aBegun = time.Now(); close(started); <-release })
	}()
	<-started
	b.do(2, 8, func([]int) { bBegun = time.Now() })
	close(release)
	<-done
	if gap := bBegun.Sub(aBegun); gap < p.spacing {
		t.Errorf("b's batch began %v after a's, which still ran; want at least %v", gap, p.spacing)
	}
}
