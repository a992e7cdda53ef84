package limits

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func TestRate(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	r := NewRate(10, 3)
	r.now = c.now
	for i := 0; i < 3; i++ {
		if !r.Allow("a") {
			t.Fatalf("burst event %d refused", i)
		}
	}
	if r.Allow("a") {
		t.Fatal("fourth event in the same instant allowed")
	}
	if !r.Allow("b") {
		t.Fatal("another key is limited too")
	}
	c.t = c.t.Add(100 * time.Millisecond) // one token at 10/s
	if !r.Allow("a") || r.Allow("a") {
		t.Fatal("refill is not one token per 100 ms")
	}
	r.Set(0, 0) // off
	for i := 0; i < 100; i++ {
		if !r.Allow("a") {
			t.Fatal("limited while off")
		}
	}
	r.Set(1, 1)
	c.t = c.t.Add(time.Hour)
	if !r.Allow("a") || r.Allow("a") {
		t.Fatal("new setting not applied to an existing key")
	}
	// Idle keys are forgotten.
	for i := 0; i < sweepEvery; i++ {
		r.Allow(fmt.Sprint("k", i))
	}
	c.t = c.t.Add(2 * idle)
	for i := 0; i < sweepEvery; i++ {
		r.Allow("z")
	}
	n := 0
	for i := range r.shards {
		n += len(r.shards[i].keys)
	}
	if n > 2 {
		t.Fatalf("%d keys kept after they went idle", n)
	}
}

func TestFailures(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	f := NewFailures(3, time.Minute, 5*time.Minute)
	f.now = c.now
	if f.Fail("ip") || f.Fail("ip") {
		t.Fatal("banned before the third failure")
	}
	if !f.Fail("ip") || !f.Banned("ip") {
		t.Fatal("not banned after three failures")
	}
	f.Succeed("ip") // a success does not lift a ban
	if !f.Banned("ip") {
		t.Fatal("ban lifted by a success")
	}
	c.t = c.t.Add(6 * time.Minute)
	if f.Banned("ip") {
		t.Fatal("still banned after the ban")
	}
	// Failures spread beyond the window do not add up.
	f.Fail("x")
	f.Fail("x")
	c.t = c.t.Add(2 * time.Minute)
	if f.Fail("x") {
		t.Fatal("failures outside the window counted")
	}
	f.Set(0, 0, 0)
	for i := 0; i < 10; i++ {
		if f.Fail("y") || f.Banned("y") {
			t.Fatal("banning while off")
		}
	}
}

func TestConns(t *testing.T) {
	c := NewConns(2)
	if !c.Acquire("a") || !c.Acquire("a") || c.Acquire("a") {
		t.Fatal("cap of 2 not enforced")
	}
	if !c.Acquire("b") {
		t.Fatal("another key capped")
	}
	c.Release("a")
	if !c.Acquire("a") {
		t.Fatal("released slot not reusable")
	}
	c.Release("a")
	c.Release("a")
	if len(c.open) != 1 {
		t.Fatalf("open = %v", c.open)
	}
}
