// Package cluster_test runs several real gchd processes on one fresh
// PostgreSQL database and does to them what happens to nodes in
// production: a second process under a taken name, kill -9, a freeze
// longer than the lease, every database session cut.
package cluster_test

import (
	"bufio"
	"bytes"
	"database/sql"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "github.com/lib/pq"

	"gchd/internal/testkit"
	"gchd/storage"
)

const domain = "cluster.test"

// node is one gchd process.
type node struct {
	name     string
	sip      int
	http     int
	cmd      *exec.Cmd
	exited   chan struct{}
	mu       sync.Mutex
	log      bytes.Buffer
	exitCode int
}

// cluster is the nodes sharing one database, and the binary they run.
type cluster struct {
	t   *testing.T
	bin string
	dsn string
	db  *sql.DB
}

func newCluster(t *testing.T) *cluster {
	if testing.Short() {
		t.Skip("builds gchd and runs real processes")
	}
	return newClusterOn(t, testkit.DSN(t, storage.Postgres))
}

// newClusterOn is a cluster on the database dsn.
func newClusterOn(t *testing.T, dsn string) *cluster {
	bin := filepath.Join(t.TempDir(), "gchd")
	if out, err := exec.Command("go", "build", "-o", bin, "gchd").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &cluster{t: t, bin: bin, dsn: dsn, db: db}
}

// freePort finds a port free for UDP and TCP on 127.0.0.1.
func freePort(t *testing.T) int {
	for range 20 {
		u, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		u.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no port free for UDP and TCP")
	return 0
}

// start runs a node; it is killed when the test ends.
func (c *cluster) start(name string) *node {
	n := &node{name: name, sip: freePort(c.t), http: freePort(c.t)}
	c.run(n)
	return n
}

func (c *cluster) run(n *node) {
	cmd := exec.Command(c.bin, "serve")
	cmd.Env = append(os.Environ(),
		"GCHD_DATABASE="+c.dsn, "GCHD_DOMAIN="+domain, "GCHD_REGISTRAR_NODE="+n.name,
		fmt.Sprintf("GCHD_SIP_ADDR=127.0.0.1:%d", n.sip), fmt.Sprintf("GCHD_HTTP_ADDR=127.0.0.1:%d", n.http),
		"GCHD_SIP_ADVERTISE=127.0.0.1", "GCHD_LOG_LEVEL="+logLevel())
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	n.cmd, n.exited = cmd, make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			n.mu.Lock()
			n.log.WriteString(sc.Text() + "\n")
			n.mu.Unlock()
		}
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		n.mu.Lock()
		n.exitCode = cmd.ProcessState.ExitCode()
		n.mu.Unlock()
		close(n.exited)
	}()
	c.t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-n.exited
		if c.t.Failed() {
			c.t.Logf("log of %s:\n%s", n.name, n.logText())
		}
	})
}

func (n *node) logText() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.log.String()
}

// metric reads one sample of the node's /metrics; ok is false when the
// node does not answer.
func (n *node) metric(sample string) (float64, bool) {
	client := &http.Client{Timeout: 2 * time.Second}
	res, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", n.http))
	if err != nil {
		return 0, false
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

func (n *node) ready() int {
	client := &http.Client{Timeout: 2 * time.Second}
	res, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/readyz", n.http))
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func (c *cluster) sees(t *testing.T, n *node, count int) func() bool {
	return func() bool { v, ok := n.metric("gchd_cluster_nodes"); return ok && v == float64(count) }
}

func (c *cluster) epoch(name string) int64 {
	var e int64
	if err := c.db.QueryRow("SELECT epoch FROM nodes WHERE name = $1", name).Scan(&e); err != nil {
		c.t.Fatalf("epoch of %s: %v", name, err)
	}
	return e
}

func TestMembership(t *testing.T) {
	c := newCluster(t)
	n1, n2, n3 := c.start("n1"), c.start("n2"), c.start("n3")
	for _, n := range []*node{n1, n2, n3} {
		within(t, 30*time.Second, n.name+" ready and seeing 3 nodes", func() bool { return n.ready() == 200 && c.sees(t, n, 3)() })
	}

	t.Run("a second process under a live name is refused", func(t *testing.T) {
		dup := &node{name: "n2", sip: freePort(t), http: freePort(t)}
		c.run(dup)
		select {
		case <-dup.exited:
		case <-time.After(15 * time.Second):
			t.Fatal("a second n2 is still running")
		}
		if dup.exitCode == 0 || !strings.Contains(dup.logText(), "GCHD_REGISTRAR_NODE") {
			t.Fatalf("second n2 exited %d: %s", dup.exitCode, dup.logText())
		}
		if n2.ready() != 200 {
			t.Fatal("the live n2 suffered from the attempt")
		}
	})

	t.Run("kill -9 and restart under the same name", func(t *testing.T) {
		before := c.epoch("n3")
		n3.cmd.Process.Kill()
		<-n3.exited
		d := within(t, 10*time.Second, "n1 sees n3 gone", c.sees(t, n1, 2))
		t.Logf("n3 gone for n1 %v after kill -9", d.Round(100*time.Millisecond))
		c.run(n3)
		within(t, 30*time.Second, "n3 back", func() bool { return n3.ready() == 200 && c.sees(t, n1, 3)() })
		if after := c.epoch("n3"); after != before+1 {
			t.Fatalf("n3's epoch went from %d to %d; want a new one", before, after)
		}
	})

	t.Run("frozen past its lease, a node fences itself and rejoins", func(t *testing.T) {
		before := c.epoch("n2")
		n2.cmd.Process.Signal(syscall.SIGSTOP)
		within(t, 10*time.Second, "n1 sees n2 gone", c.sees(t, n1, 2))
		time.Sleep(time.Second)
		n2.cmd.Process.Signal(syscall.SIGCONT)
		within(t, 10*time.Second, "n2 back", func() bool { return n2.ready() == 200 && c.sees(t, n1, 3)() })
		if after := c.epoch("n2"); after != before+1 {
			t.Fatalf("n2's epoch went from %d to %d; want a new one after the lapse", before, after)
		}
		log := n2.logText()
		if !strings.Contains(log, "node fenced") || !strings.Contains(log, "rejoined under a new epoch") {
			t.Fatalf("n2's log does not show the fence and the rejoin:\n%s", log)
		}
		if v, _ := n2.metric(`gchd_cluster_lease_renewals_total{outcome="lapsed"}`); v < 1 {
			t.Fatal("no lapsed renewal counted")
		}
	})

	t.Run("every database session cut", func(t *testing.T) {
		admin := testkit.PostgresAdmin(t)
		var name string
		if err := c.db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name); err != nil {
			t.Fatal(err)
		}
		for _, n := range []*node{n1, n2, n3} {
			within(t, 15*time.Second, n.name+" serving and seeing 3 nodes again", func() bool { return n.ready() == 200 && c.sees(t, n, 3)() })
		}
	})
}

// logLevel is the nodes' log level: GCHD_TEST_LOG_LEVEL, else info.
func logLevel() string {
	if l := os.Getenv("GCHD_TEST_LOG_LEVEL"); l != "" {
		return l
	}
	return "info"
}
