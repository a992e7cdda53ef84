package storage

import "testing"

func TestLanes(t *testing.T) {
	l := startLanes(1)
	defer l.close()

	// Nested use runs in place instead of waiting for the only lane.
	ran := 0
	l.do(func() { l.do(func() { ran++ }); ran++ })
	if ran != 2 {
		t.Fatalf("ran %d, want 2", ran)
	}

	defer func() {
		if p := recover(); p != "boom" {
			t.Fatalf("recovered %v, want the lane's panic", p)
		}
	}()
	l.do(func() { panic("boom") })
	t.Fatal("do returned after a panic")
}
