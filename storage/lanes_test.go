package storage

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestLanes(t *testing.T) {
	l := startLanes(1)
	defer l.close()

	// Callers wait for the only lane rather than run in place.
	var ran atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.do(func() { ran.Add(1) })
		}()
	}
	wg.Wait()
	if ran.Load() != 8 {
		t.Fatalf("ran %d, want 8", ran.Load())
	}

	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the lane's panic", p)
		}
	}()
	l.do(func() { panic("boom") })
	t.Fatal("do returned after a panic")
}

func TestLanesClosedRunInPlace(t *testing.T) {
	l := startLanes(1)
	l.close()
	ran := false
	l.do(func() { ran = true })
	if !ran {
		t.Fatal("a closed lanes did not run fn")
	}
}
