package cluster_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"gchd/cluster"
	"gchd/internal/testkit"
	"gchd/storage"
)

// Short leases keep the tests quick; the ratios are the production ones.
const (
	lease = 400 * time.Millisecond
	renew = 100 * time.Millisecond
)

func options(name string) cluster.Options {
	return cluster.Options{Name: name, Address: "127.0.0.1:5060", Lease: lease, Renew: renew, Setting: "GCHD_REGISTRAR_NODE"}
}

// run renews m's lease until the test ends, then leaves.
func run(t *testing.T, m *cluster.Membership) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.Run(ctx)
	}()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

func names(ns []cluster.Node) string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name)
	}
	return strings.Join(s, ",")
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestJoinRenewLeave(t *testing.T) {
	ctx := context.Background()
	for _, e := range testkit.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			db := testkit.Open(t, e)
			a, err := cluster.Join(ctx, db.Nodes(), options("a"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := cluster.Join(ctx, db.Nodes(), options("b"))
			if err != nil {
				t.Fatal(err)
			}
			if a.Epoch() != 1 || b.Epoch() != 1 {
				t.Fatalf("epochs %d, %d; want 1 at the first start", a.Epoch(), b.Epoch())
			}
			stopA, _ := run(t, a), run(t, b)
			eventually(t, "both nodes live", func() bool { return names(a.Live()) == "a,b" })
			// Renewals hold the lease well past its length.
			time.Sleep(3 * lease)
			if a.Fenced() || b.Fenced() {
				t.Fatal("a renewing node is fenced")
			}
			live, err := db.Nodes().LiveNodes(ctx)
			if err != nil || names(live) != "a,b" {
				t.Fatalf("live nodes %q, %v; want a,b", names(live), err)
			}
			// Leaving ends the lease at once: a restart needs no wait.
			stopA()
			eventually(t, "a gone", func() bool { return names(b.Live()) == "b" })
			start := time.Now()
			a2, err := cluster.Join(ctx, db.Nodes(), options("a"))
			if err != nil {
				t.Fatal(err)
			}
			if a2.Epoch() != 2 {
				t.Fatalf("epoch after a restart %d, want 2", a2.Epoch())
			}
			if d := time.Since(start); d > lease/2 {
				t.Fatalf("rejoin after a clean stop waited %v", d)
			}
		})
	}
}

// Two live processes never share a name; a process killed without leaving
// hands its name over once its lease runs out.
func TestNameHeld(t *testing.T) {
	ctx := context.Background()
	for _, e := range testkit.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			db := testkit.Open(t, e)
			live, err := cluster.Join(ctx, db.Nodes(), options("n1"))
			if err != nil {
				t.Fatal(err)
			}
			run(t, live)
			_, err = cluster.Join(ctx, db.Nodes(), options("n1"))
			var held *cluster.NameHeldError
			if !errors.As(err, &held) || !strings.Contains(err.Error(), "GCHD_REGISTRAR_NODE") {
				t.Fatalf("second process under a live name: %v; want a NameHeldError naming the setting", err)
			}

			// A killed process: joined, never renewed, never left.
			dead, err := cluster.Join(ctx, db.Nodes(), options("n2"))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			next, err := cluster.Join(ctx, db.Nodes(), options("n2"))
			if err != nil {
				t.Fatalf("restart after a kill: %v", err)
			}
			if next.Epoch() != dead.Epoch()+1 {
				t.Fatalf("epoch %d after %d", next.Epoch(), dead.Epoch())
			}
			if d := time.Since(start); d > 2*lease {
				t.Fatalf("takeover waited %v, more than the lease", d)
			}
			// The old process, woken, finds its name taken: it stays fenced.
			run(t, dead)
			eventually(t, "the displaced process fenced", dead.Fenced)
			time.Sleep(3 * renew)
			if !dead.Fenced() {
				t.Fatal("a displaced process lifted its fence")
			}
		})
	}
}

// A SQLite database is for one node.
func TestExclusive(t *testing.T) {
	ctx := context.Background()
	db := testkit.Open(t, storage.SQLite)
	o := options("one")
	o.Exclusive = true
	one, err := cluster.Join(ctx, db.Nodes(), o)
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, one)
	o.Name = "two"
	_, err = cluster.Join(ctx, db.Nodes(), o)
	var other *cluster.OtherNodeError
	if !errors.As(err, &other) || other.Other != "one" || !strings.Contains(err.Error(), "SQLite database is for one gchd node") {
		t.Fatalf("second node on SQLite: %v", err)
	}
	stop()
	if _, err := cluster.Join(ctx, db.Nodes(), o); err != nil {
		t.Fatalf("a node after the first stopped: %v", err)
	}
}

// A node frozen past its lease (SIGSTOP, a stalled VM) knows it is fenced
// the moment it runs again, before any renewal answers, and rejoins under a
// new epoch: what it held under the old one was the others' to take over.
func TestFrozenNodeFencesAndRejoins(t *testing.T) {
	ctx := context.Background()
	for _, e := range testkit.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			db := testkit.Open(t, e)
			m, err := cluster.Join(ctx, db.Nodes(), options("f"))
			if err != nil {
				t.Fatal(err)
			}
			if m.Fenced() {
				t.Fatal("fenced right after joining")
			}
			time.Sleep(lease) // frozen: no renewals
			if !m.Fenced() {
				t.Fatal("not fenced after a lease without renewals")
			}
			live, err := db.Nodes().LiveNodes(ctx)
			if err != nil || len(live) != 0 {
				t.Fatalf("live nodes %q, %v; want none: the lease lapsed", names(live), err)
			}
			run(t, m)
			eventually(t, "the fence lifted", func() bool { return !m.Fenced() })
			if m.Epoch() != 2 {
				t.Fatalf("epoch %d after rejoining, want 2", m.Epoch())
			}
		})
	}
}

// A node that cannot reach the database fences itself, and lifts the fence
// when the database is back, without a restart.
func TestDatabaseGoneFences(t *testing.T) {
	ctx := context.Background()
	dsn := testkit.DSN(t, storage.Postgres)
	db, err := storage.Open(ctx, dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	u, _ := url.Parse(dsn)
	name := strings.TrimPrefix(u.Path, "/")
	u.Path = "/postgres"
	admin, err := sql.Open("postgres", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	m, err := cluster.Join(ctx, db.Nodes(), options("g"))
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	for _, q := range []string{"ALTER DATABASE " + name + " ALLOW_CONNECTIONS false",
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '" + name + "'"} {
		if _, err := admin.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { admin.Exec("ALTER DATABASE " + name + " ALLOW_CONNECTIONS true") })
	eventually(t, "fenced while the database refuses", m.Fenced)
	if _, err := admin.ExecContext(ctx, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the fence lifted", func() bool { return !m.Fenced() })
}
