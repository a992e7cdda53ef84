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
	f.SucceedAs("ip", "") // a success does not lift a ban
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

func TestFailuresSuccessClearsOnlyItsAccount(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	f := NewFailures(5, time.Minute, 5*time.Minute)
	f.now = c.now
	// The owner mistypes twice, then gets in: those failures go.
	f.FailAs("ip", "alice")
	f.FailAs("ip", "alice")
	f.SucceedAs("ip", "alice")
	if f.Suspect("ip") {
		t.Fatal("suspect after the owner's success")
	}
	// A guesser with a good account of its own: its successes clear
	// nothing of its guesses at others.
	for i := 0; i < 4; i++ {
		if f.FailAs("ip", "victim") {
			t.Fatalf("banned at guess %d", i+1)
		}
		f.SucceedAs("ip", "mine")
	}
	if !f.Suspect("ip") {
		t.Fatal("not suspect after guesses")
	}
	if !f.FailAs("ip", "other") || !f.Banned("ip") {
		t.Fatal("interleaved successes kept the guesser under the limit")
	}
	c.t = c.t.Add(6 * time.Minute)
	if f.Banned("ip") || f.Suspect("ip") {
		t.Fatal("still banned or suspect after the ban")
	}
}

func TestLoginsLockOnlySuspectSources(t *testing.T) {
	c := &clock{t: time.Unix(1000, 0)}
	l := Logins{Source: NewFailures(100, time.Minute, 5*time.Minute), Account: NewFailures(3, time.Minute, 5*time.Minute)}
	l.Source.now, l.Account.now = c.now, c.now
	for i := 0; i < 3; i++ {
		if got := l.Admit("bad", "alice"); got != "" {
			t.Fatalf("attempt %d refused by %s", i+1, got)
		}
		l.Failed("bad", "alice")
	}
	if got := l.Admit("bad", "alice"); got != "auth_account" {
		t.Fatalf("locked account from the failing source: %q", got)
	}
	if got := l.Admit("clean", "alice"); got != "" {
		t.Fatalf("locked account from a clean source: refused by %s", got)
	}
	l.Failed("clean", "alice")
	if got := l.Admit("clean", "alice"); got != "auth_account" {
		t.Fatalf("a source that failed once on a locked account: %q", got)
	}
	// With the source limit off, failures still mark sources.
	l.Source.Set(0, time.Minute, 5*time.Minute)
	if got := l.Admit("bad", "alice"); got != "auth_account" {
		t.Fatalf("source limit off: %q", got)
	}
	if got := l.Admit("new", "alice"); got != "" {
		t.Fatalf("source limit off, clean source: %q", got)
	}
}
