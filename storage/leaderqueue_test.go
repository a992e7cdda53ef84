package storage

import (
	"sync"
	"testing"
	"time"
)

// A leader waits out the spacing only after a batch of several items: an
// uncontended caller runs at once.
func TestLeaderQueueSpacing(t *testing.T) {
	var q leaderQueue[int]
	q.spacing = time.Hour // a wait would time the test out
	q.do(1, 8, func([]int) {})
	q.do(2, 8, func([]int) {})

	q.spacing = 50 * time.Millisecond
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
	if gap := begun[1].Sub(begun[0]); gap < q.spacing {
		t.Errorf("batch after a batch of two began %v after it, want at least %v", gap, q.spacing)
	}
}

// With overlap a batch runs while the one before it still does; without,
// it waits for it.
func TestLeaderQueueOverlap(t *testing.T) {
	for _, overlap := range []bool{true, false} {
		q := leaderQueue[int]{overlap: overlap}
		started, release := make(chan struct{}), make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			q.do(1, 8, func([]int) { close(started); <-release })
		}()
		<-started
		second := make(chan struct{})
		go func() { q.do(2, 8, func([]int) {}); close(second) }()
		select {
		case <-second:
			if !overlap {
				t.Error("without overlap a batch ran while the one before it did")
			}
		case <-time.After(200 * time.Millisecond):
			if overlap {
				t.Error("with overlap a batch waited for the one before it")
			}
		}
		close(release)
		<-done
		<-second
	}
}
