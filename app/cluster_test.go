package app

import (
	"context"
	"database/sql"
	"strings"
	"testing"
	"time"

	"gchd/configs"
	"gchd/storage"
)

// Two nodes on one PostgreSQL see each other; a second process under a
// live node's name is refused, naming the setting.
func TestClusterNodeNames(t *testing.T) {
	n1 := startEngine(t, storage.Postgres, func(c *configs.Config) { c.Registrar.Node = "n1" })
	same := n1.cfg
	if _, err := New(context.Background(), same, testLogger()); err == nil || !strings.Contains(err.Error(), "GCHD_REGISTRAR_NODE") {
		t.Fatalf("a second process named n1: %v; want a refusal naming GCHD_REGISTRAR_NODE", err)
	}
	other := n1.cfg
	other.Registrar.Node = "n2"
	n2 := start(t, other)
	for _, s := range []*server{n1, n2} {
		deadline := time.Now().Add(5 * time.Second)
		for !metricAtLeast(t, s, "gchd_cluster_nodes", 2) {
			if time.Now().After(deadline) {
				t.Fatalf("%s does not see two nodes", s.cfg.Registrar.Node)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// SQLite is for one node: a second node on the same file is refused.
func TestClusterSQLiteIsForOneNode(t *testing.T) {
	one := startEngine(t, storage.SQLite, func(c *configs.Config) { c.Registrar.Node = "one" })
	two := one.cfg
	two.Registrar.Node = "two"
	_, err := New(context.Background(), two, testLogger())
	if err == nil || !strings.Contains(err.Error(), "SQLite database is for one gchd node") {
		t.Fatalf("a second node on SQLite: %v", err)
	}
	t.Logf("refused: %v", err)
}

// A node that lost its place (here its name was taken over, as by a
// process started while its lease had lapsed) is fenced: not ready, REGISTER
// 503 with Retry-After, and no deliveries, while the database serves.
func TestClusterFencedNode(t *testing.T) {
	s := startEngine(t, storage.Postgres, func(c *configs.Config) {
		c.Registrar.Node = "f1"
		c.Cluster.Lease, c.Cluster.Renew = time.Second, 250*time.Millisecond
	})
	s.addAccount("alice", "pw-alice", "Alice")
	s.addAccount("bob", "pw-bob", "Bob")
	id := groupOf(t, s, "alice", "bob")
	s.must("bob", "joinGroup", map[string]any{"id": id})
	bob := newPhone(t, s, "bob", "TCP")
	if res := bob.register(); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %s", res.StartLine())
	}
	waitReady(t, s, 200, 10*time.Second)
	before := len(bob.waitFor(2)) // the group's NG and bob's join

	conn, err := sql.Open("postgres", s.cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Exec("UPDATE nodes SET epoch = epoch + 100 WHERE name = 'f1'"); err != nil {
		t.Fatal(err)
	}
	body := waitReady(t, s, 503, 5*time.Second)
	if !strings.Contains(body, `"cluster":"`) || strings.Contains(body, `"cluster":"ok"`) {
		t.Fatalf("/readyz does not name the cluster check: %s", body)
	}
	if !metricAtLeast(t, s, "gchd_cluster_fenced", 1) || !metricAtLeast(t, s, `gchd_cluster_lease_renewals_total{outcome="displaced"}`, 1) {
		t.Fatal("the metrics do not show the fence")
	}
	wantSIPUnavailable(t, "REGISTER while fenced", bob.send(bob.registerRequest(300)))
	// The API still commits (another node delivers), this node sends nothing.
	s.must("alice", "sendMessage", map[string]any{"id": id, "mb": "while fenced"})
	time.Sleep(time.Second)
	if got := len(bob.received()); got != before {
		t.Fatalf("a fenced node delivered %d requests: %q", got-before, bodies(bob.received()[before:]))
	}
}
