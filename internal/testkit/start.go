package testkit

import (
	"context"
	"testing"
	"time"
)

// Runner is a server that serves until its context ends (app.App).
type Runner interface {
	Run(ctx context.Context) error
}

// Running is a server started for one test; it stops at the test's
// cleanup, or earlier by Stop.
type Running[R Runner] struct {
	Server R
	t      testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Start builds a server with newServer and runs it until the test ends.
// newServer gets the context the server runs under; its error fails the
// test.
func Start[R Runner](t testing.TB, newServer func(ctx context.Context) (R, error)) *Running[R] {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := newServer(ctx)
	if err != nil {
		cancel()
		t.Fatalf("start gchd: %v", err)
	}
	r := &Running[R]{Server: srv, t: t, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(r.Stop)
	return r
}

// Stop ends the server and fails the test if it does not stop cleanly
// within 30 s. Later calls do nothing.
func (r *Running[R]) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("gchd stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		r.t.Errorf("gchd did not stop within 30 s")
	}
}

// Alive fails the test if the server has stopped on its own: it must
// serve until it is stopped.
func (r *Running[R]) Alive(t testing.TB) {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		t.Fatalf("gchd stopped serving: %v", err)
	default:
	}
}
