package cluster_test

import (
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"gchd/internal/testkit"
)

// privatePostgres is a PostgreSQL server of the test's own, which it may
// restart without disturbing the other tests' databases.
type privatePostgres struct {
	t      *testing.T
	bin    string // the directory of initdb and pg_ctl
	dir    string
	port   int
	asUser string // run the server as this user ("" the current one): PostgreSQL refuses root
}

// startPrivatePostgres runs initdb and starts the server, or skips the
// test saying why it cannot.
func startPrivatePostgres(t *testing.T) *privatePostgres {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(matches) == 0 {
		t.Skip("SKIPPED: no PostgreSQL server binaries (initdb) to run a private server with")
	}
	// It listens on a Unix socket in its own directory only: no port of
	// the machine's can be taken by another test while it is down.
	p := &privatePostgres{t: t, bin: filepath.Dir(matches[len(matches)-1]), port: 5432}
	dir, err := os.MkdirTemp("", "gchd-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = dir
	t.Cleanup(func() {
		p.run("pg_ctl", "-D", p.dir, "-m", "immediate", "stop")
		os.RemoveAll(dir)
	})
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("SKIPPED: running as root and there is no postgres user to run a private server as")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.asUser = "postgres"
	}
	if out, err := p.run("initdb", "-D", p.dir, "-A", "trust", "-U", "postgres", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p *privatePostgres) start() error {
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses='' -c fsync=off -c max_connections=200", p.port, p.dir)
	if out, err := p.run("pg_ctl", "-D", p.dir, "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	return nil
}

// dsn is the DSN of database name.
func (p *privatePostgres) dsn(name string) string {
	return fmt.Sprintf("postgres://postgres@/%s?host=%s&port=%d&sslmode=disable", name, p.dir, p.port)
}

func (p *privatePostgres) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(p.bin, name), args...)
	if p.asUser != "" {
		cmd = exec.Command("runuser", append([]string{"-u", p.asUser, "--", filepath.Join(p.bin, name)}, args...)...)
	}
	return cmd.CombinedOutput()
}

// database creates a database and returns its DSN.
func (p *privatePostgres) database(name string) string {
	admin, err := sql.Open("postgres", p.dsn("postgres"))
	if err != nil {
		p.t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		p.t.Fatal(err)
	}
	return p.dsn(name)
}

// restart stops the server, waits down, and starts it again.
func (p *privatePostgres) restart(down time.Duration) error {
	if out, err := p.run("pg_ctl", "-D", p.dir, "-m", "fast", "-w", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
	}
	time.Sleep(down)
	return p.start()
}

// The database restarts in a burst: every node fences itself while it is
// away and recovers without a process restart; every post answered 200
// reaches every member, also those handed over between nodes.
func TestDatabaseRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds gchd and runs real processes")
	}
	pg := startPrivatePostgres(t)
	c := newClusterOn(t, pg.database("gchd"))
	n1, n2, n3 := c.start("n1"), c.start("n2"), c.start("n3")
	for _, n := range []*node{n1, n2, n3} {
		within(t, 30*time.Second, n.name+" ready and seeing 3 nodes", func() bool { return n.ready() == 200 && c.sees(t, n, 3)() })
	}
	testkit.AddAccounts(t, c.dsn, domain, "pat", "ann", "dan")
	ann, dan, id := annAndDan(t, n1, n2, n3)
	restarted := make(chan error, 1)
	b := startBurst(n1, "pat", id, 400, 20*time.Millisecond, 50, func() {
		go func() { restarted <- pg.restart(6 * time.Second) }() // the posts go on meanwhile, and fail
	})
	answered := b.wait(t)
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	for _, n := range []*node{n1, n2, n3} {
		within(t, 30*time.Second, n.name+" ready and seeing 3 nodes after the restart", func() bool { return n.ready() == 200 && c.sees(t, n, 3)() })
		if v, _ := n.metric(`gchd_cluster_lease_renewals_total{outcome="failed"}`); v < 1 {
			t.Errorf("%s counted no failed renewal while the database was away", n.name)
		}
	}
	if mid := post(n1, "pat", id, "after the restart"); mid == 0 {
		t.Fatal("post after the restart not answered")
	} else {
		answered = append(answered, mid)
	}
	settle(t, answered, &member{"ann", []*phone{ann}}, &member{"dan", []*phone{dan}})
}
