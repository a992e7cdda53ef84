package storage_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/storage"
)

// A listener gets what is notified, is told when it is connected, and again
// after its session was cut, and then gets what is notified after.
func TestListenNotify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dsn := testkit.DSN(t, storage.Postgres)
	db, err := storage.Open(ctx, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	u, _ := url.Parse(dsn)
	name := strings.TrimPrefix(u.Path, "/")
	got := make(chan storage.Notification, 16)
	caughtUp := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() {
		done <- db.Listen(ctx, []string{"gchd_test"}, func(n storage.Notification) { got <- n },
			func() { caughtUp <- struct{}{} })
	}()
	wait := func(what string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", what)
		}
	}
	receive := func(want string) {
		t.Helper()
		for {
			if err := db.Notify(ctx, "gchd_test", want); err != nil {
				t.Fatal(err)
			}
			select {
			case n := <-got:
				if n.Channel != "gchd_test" || n.Payload != want {
					t.Fatalf("got %+v, want %q", n, want)
				}
				return
			case <-time.After(10 * time.Second):
				t.Fatalf("notification %q not received", want)
			}
		}
	}
	wait("first catch-up", caughtUp)
	receive("one")

	admin := testkit.PostgresAdmin(t)
	// The listening session is the one an operator finds by its name.
	var cut int
	if err := admin.QueryRow("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'gchd listener'",
		name).Scan(&cut); err != nil || cut != 1 {
		t.Fatalf("listener sessions cut: %d, %v; want 1", cut, err)
	}
	wait("catch-up after the session was cut", caughtUp)
	receive("two")
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Listen returned %v", err)
	}
}

// On SQLite there is one node: Notify does nothing, Listen only waits.
func TestListenNotifySQLite(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	db := testkit.Open(t, storage.SQLite)
	if err := db.Notify(ctx, "gchd_test", "x"); err != nil {
		t.Fatal(err)
	}
	caught := false
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	if err := db.Listen(ctx, []string{"gchd_test"}, func(storage.Notification) { t.Error("a notification on SQLite") }, func() { caught = true }); err != context.Canceled || !caught {
		t.Fatalf("Listen on SQLite: %v, caught up %v", err, caught)
	}
}
