package app

import (
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

// What the docs promise while the database cannot serve: /readyz is not
// ready, the API answers 503 with Retry-After (never 500), SIP answers
// REGISTER and MESSAGE 503 with Retry-After, and everything works again
// once the database does, without a restart. The database is made
// unavailable for real: a PostgreSQL database closed to connections, a
// SQLite file on a full file system.

// readyz returns /readyz's status and body.
func readyz(t *testing.T, s *server) (int, string) {
	t.Helper()
	res, err := s.client.Get(s.base + "/readyz")
	if err != nil {
		t.Fatalf("/readyz: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// waitReady polls /readyz until its status is want, and returns the body.
func waitReady(t *testing.T, s *server, want int, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		code, body := readyz(t, s)
		if code == want {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz still %d after %v, want %d: %s", code, within, want, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// wantUnavailable fails unless r is the API's 503 with a Retry-After.
func wantUnavailable(t *testing.T, what string, r reply) {
	t.Helper()
	if r.status != 503 || string(r.body) != "503" || r.header.Get("Retry-After") == "" {
		t.Fatalf("%s while the database is unavailable: %s, Retry-After %q; want 503 with Retry-After", what, r, r.header.Get("Retry-After"))
	}
}

// wantSIPUnavailable fails unless res is a 503 with a Retry-After.
func wantSIPUnavailable(t *testing.T, what string, res *sip.Response) {
	t.Helper()
	if res.StatusCode != 503 || res.GetHeader("Retry-After") == nil {
		t.Fatalf("%s while the database is unavailable: %s; want 503 with Retry-After", what, res.StartLine())
	}
}

// untilOK repeats call until it answers 200; any answer but 200 or 503 on
// the way (a 500, say) fails the test.
func untilOK(t *testing.T, what string, within time.Duration, call func() reply) reply {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r := call()
		if r.status == 200 {
			return r
		}
		if r.status != 503 {
			t.Fatalf("%s while the database recovers: %s, want 200 or 503", what, r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still %s after %v", what, r, within)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pgAdmin connects to the test server's maintenance database and returns
// it with the name of the database s uses.
func pgAdmin(t *testing.T, s *server) (*sql.DB, string) {
	t.Helper()
	u, err := url.Parse(s.cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	return testkit.PostgresAdmin(t), name
}

func pgExec(t *testing.T, admin *sql.DB, query string) {
	t.Helper()
	if _, err := admin.Exec(query); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// pgKick ends every session of database name: gchd's pool must reconnect.
func pgKick(t *testing.T, admin *sql.DB, name string) {
	t.Helper()
	pgExec(t, admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '"+name+"' AND pid <> pg_backend_pid()")
}

// degradedFixture is a server with alice and bob, a group of both, and bob's
// TCP phone.
type degradedFixture struct {
	s   *server
	id  uint32
	bob *phone
}

func newDegradedFixture(t *testing.T, engine storage.Engine, mutate ...func(*configs.Config)) degradedFixture {
	s := startEngine(t, engine, mutate...)
	s.addAccount("alice", "pw-alice", "Alice")
	s.addAccount("bob", "pw-bob", "Bob")
	id := groupOf(t, s, "alice", "bob")
	s.must("bob", "joinGroup", map[string]any{"id": id})
	bob := newPhone(t, s, "bob", "TCP")
	bob.register()
	waitReady(t, s, 200, 10*time.Second)
	return degradedFixture{s: s, id: id, bob: bob}
}

func (f degradedFixture) send(text string) reply {
	return f.s.call("alice", "pw-alice", "sendMessage", map[string]any{"id": f.id, "mb": text})
}

// A PostgreSQL database that refuses connections (and whose sessions were
// ended, as a stopped or failed-over server's are) makes gchd unready and
// its answers 503 with Retry-After over HTTP and SIP; opened again, gchd
// serves again on its own.
func TestDegradedPostgresDown(t *testing.T) {
	f := newDegradedFixture(t, storage.Postgres)
	admin, name := pgAdmin(t, f.s)
	t.Cleanup(func() { admin.Exec("ALTER DATABASE " + name + " ALLOW_CONNECTIONS true") })

	pgExec(t, admin, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS false")
	pgKick(t, admin, name)
	down := time.Now()
	body := waitReady(t, f.s, 503, 10*time.Second)
	t.Logf("closed: /readyz 503 after %v: %s", time.Since(down).Round(time.Millisecond), body)
	if !strings.Contains(body, `"database":"`) || strings.Contains(body, `"database":"ok"`) {
		t.Fatalf("/readyz does not name the failing database check: %s", body)
	}
	wantUnavailable(t, "sendMessage", f.send("while down"))
	wantUnavailable(t, "getGroup", f.s.call("alice", "pw-alice", "getGroup", map[string]any{"id": f.id}))
	// Past the account cache, authentication itself needs the database.
	time.Sleep(accountCacheTTL + 100*time.Millisecond)
	wantUnavailable(t, "an authenticated call", f.s.call("bob", "pw-bob", "getGroup", map[string]any{"id": f.id}))
	wantSIPUnavailable(t, "REGISTER", f.bob.send(f.bob.registerRequest(300)))
	wantSIPUnavailable(t, "MESSAGE to the group", f.bob.message(fmt.Sprintf("gc-%d", f.id), "while down"))

	pgExec(t, admin, "ALTER DATABASE "+name+" ALLOW_CONNECTIONS true")
	up := time.Now()
	waitReady(t, f.s, 200, 15*time.Second)
	t.Logf("open again: /readyz 200 after %v", time.Since(up).Round(time.Millisecond))
	untilOK(t, "sendMessage", 15*time.Second, func() reply { return f.send("after") })
	if res := f.bob.send(f.bob.registerRequest(300)); res.StatusCode != 200 {
		t.Fatalf("REGISTER after recovery: %s", res.StartLine())
	}
	if res := f.bob.message(fmt.Sprintf("gc-%d", f.id), "after"); res.StatusCode != 202 {
		t.Fatalf("MESSAGE after recovery: %s", res.StartLine())
	}
}

// PostgreSQL's default_transaction_read_only does not make a database
// unwritable for gchd: lib/pq begins every transaction READ WRITE, which
// overrides that default, so there is no read-only test here. A server
// that truly refuses writes (one in recovery) or has no room for its WAL
// (it stops) refuses gchd's connections or transactions, as above.

// A SQLite database on a file system that fills up: the test mounts a
// small tmpfs (root only: it is skipped, loudly, otherwise), puts the
// database on it, and fills the rest with a file, exactly as a full disk.
func TestDegradedSQLiteFullDisk(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: filling a real file system needs a tmpfs mount, which needs root; run this test as root (CI does)")
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs at %s (%v): the full-disk test needs CAP_SYS_ADMIN", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	f := newDegradedFixture(t, storage.SQLite, func(c *configs.Config) {
		c.Database = "sqlite:" + filepath.Join(dir, "gchd.db")
		c.Storage.SQLiteSynchronous = "FULL"
	})

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// The WAL may have room left in pages it already has: write until it
	// has none, as traffic would.
	deadline := time.Now().Add(20 * time.Second)
	sent := 0
	for i := 0; ; i++ {
		r := f.send(strings.Repeat("x", 4000))
		sent = i
		if r.status == 503 {
			wantUnavailable(t, "sendMessage", r)
			break
		}
		if r.status != 200 {
			t.Fatalf("sendMessage %d on a full disk: %s, want 200 (room left) or 503", i, r)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages of 4 KB written on a full 16 MB file system", i)
		}
	}
	full := time.Now()
	body := waitReady(t, f.s, 503, 10*time.Second)
	t.Logf("full disk: %d messages of 4 KB still committed; /readyz 503 %v after the first 503: %s", sent, time.Since(full).Round(time.Millisecond), body)
	if strings.Contains(body, `"database_writable":"ok"`) {
		t.Fatalf("/readyz on a full disk: %s", body)
	}
	wantSIPUnavailable(t, "MESSAGE to the group", f.bob.message(fmt.Sprintf("gc-%d", f.id), "full"))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	waitReady(t, f.s, 200, 10*time.Second)
	t.Logf("room again: /readyz 200 after %v", time.Since(freed).Round(time.Millisecond))
	untilOK(t, "sendMessage", 10*time.Second, func() reply { return f.send("room again") })
	if res := f.bob.message(fmt.Sprintf("gc-%d", f.id), "room again"); res.StatusCode != 202 {
		t.Fatalf("MESSAGE after the disk has room: %s", res.StartLine())
	}
}

// A PostgreSQL database whose tablespace fills up answers 503, not 500:
// the test mounts a small tmpfs for the server's user (root only, skipped
// otherwise), moves the test's database there before gchd starts, and
// fills the rest.
func TestDegradedPostgresFullDisk(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED: filling a real file system needs a tmpfs mount, which needs root; run this test as root (CI does)")
	}
	cfg := testConfig(t, storage.Postgres)
	u, err := url.Parse(cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(u.Path, "/")
	if h := u.Hostname(); h != "127.0.0.1" && h != "localhost" {
		t.Skipf("SKIPPED: PostgreSQL at %s is not on this machine: its disk cannot be filled from here", h)
	}
	admin := testkit.PostgresAdmin(t)
	var dataDir string
	if err := admin.QueryRow("SHOW data_directory").Scan(&dataDir); err != nil {
		t.Skipf("SKIPPED: cannot read data_directory (%v)", err)
	}
	st, err := os.Stat(dataDir)
	if err != nil {
		t.Skipf("SKIPPED: the server's data directory %s is not visible here (%v)", dataDir, err)
	}
	uid, gid := st.Sys().(*syscall.Stat_t).Uid, st.Sys().(*syscall.Stat_t).Gid

	dir, err := os.MkdirTemp("", "gchd-pg-full-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	os.Chmod(dir, 0o755)
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=16m,uid=%d,gid=%d,mode=0700", uid, gid)); err != nil {
		t.Skipf("SKIPPED: cannot mount a tmpfs at %s (%v): the full-disk test needs CAP_SYS_ADMIN", dir, err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	space := "gchd_full_" + name
	pgExec(t, admin, "CREATE TABLESPACE "+space+" LOCATION '"+dir+"'")
	t.Cleanup(func() {
		// The database goes first: a tablespace in use cannot be dropped.
		admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)")
		admin.Exec("DROP TABLESPACE IF EXISTS " + space)
	})
	pgExec(t, admin, "ALTER DATABASE "+name+" SET TABLESPACE "+space)
	f := newDegradedFixture(t, storage.Postgres, func(c *configs.Config) { c.Database = cfg.Database })

	fill(t, filepath.Join(dir, "filler"))
	t.Logf("filled %s", dir)
	deadline := time.Now().Add(30 * time.Second)
	sent := 0
	for i := 0; ; i++ {
		r := f.send(randomText(4000))
		if r.status == 503 {
			wantUnavailable(t, "sendMessage", r)
			break
		}
		if r.status != 200 {
			t.Fatalf("sendMessage %d on a full disk: %s, want 200 (room left) or 503", i, r)
		}
		sent = i + 1
		if time.Now().After(deadline) {
			t.Fatalf("%d messages of 4 KB written on a full 16 MB tablespace", sent)
		}
	}
	// /readyz is not asserted: the probe's row is updated in place, in a
	// page the table has, and may commit while new rows find no room.
	code, body := readyz(t, f.s)
	t.Logf("full tablespace: %d messages of 4 KB still committed, then 503; /readyz %d: %s", sent, code, body)

	os.Remove(filepath.Join(dir, "filler"))
	untilOK(t, "sendMessage", 10*time.Second, func() reply { return f.send("room again") })
}

// randomText is n characters that do not compress (PostgreSQL compresses
// long values, which would fit a whole full disk's worth in a page).
func randomText(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)[:n]
}

// fill writes path until the file system has no room left.
func fill(t *testing.T, path string) {
	t.Helper()
	fh, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := fh.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	// Whatever is less than a chunk.
	for {
		if _, err := fh.Write(buf[:512]); err != nil {
			break
		}
	}
}

// A source's idle SIP connections up to its cap leave it the API (the
// caps were one, shared: as many idle SIP connections as the cap locked
// the address out of HTTP), and the next SIP connection is refused; the
// other way round, idle HTTP connections leave it SIP.
func TestConnectionCapsAreSeparate(t *testing.T) {
	const sipCap, httpCap = 50, 20
	s := startEngine(t, storage.SQLite, func(c *configs.Config) {
		c.Limits.SIPConnectionsPerSource = sipCap
		c.Limits.HTTPConnectionsPerSource = httpCap
	})
	keepAlive := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("\r\n\r\n")); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 2))
		return err
	}
	var sipConns []net.Conn
	for i := 0; i < sipCap; i++ {
		c := s.dial("TCP")
		if err := keepAlive(c); err != nil {
			t.Fatalf("SIP connection %d of %d: %v", i+1, sipCap, err)
		}
		sipConns = append(sipConns, c)
	}
	if err := keepAlive(s.dial("TCP")); err == nil {
		t.Fatalf("SIP connection %d was served over a cap of %d", sipCap+1, sipCap)
	}
	// A new HTTP connection from the same address.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := client.Get(s.base + "/healthz")
	if err != nil {
		t.Fatalf("the API with %d idle SIP connections from the address: %v", sipCap, err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("/healthz: %d", res.StatusCode)
	}

	// The /healthz connection's slot is given back once the server has
	// closed it, which may be after the client read the answer.
	waitOpen(t, s, 0)
	var httpConns []net.Conn
	for i := 0; i < httpCap; i++ {
		c, err := net.Dial("tcp", s.app.HTTPAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		httpConns = append(httpConns, c)
	}
	waitOpen(t, s, httpCap) // accepted, each holding a slot
	if res, err := client.Get(s.base + "/healthz"); err == nil {
		res.Body.Close()
		t.Fatalf("HTTP connection %d was served over a cap of %d", httpCap+1, httpCap)
	}
	// With HTTP at its cap, a SIP slot given back is SIP's to use.
	sipConns[0].Close()
	for i := 0; ; i++ { // the slot is free once the server has seen the close
		err := keepAlive(s.dial("TCP"))
		if err == nil {
			break
		}
		if i == 20 {
			t.Fatalf("a SIP slot freed while HTTP is at its cap: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, c := range httpConns {
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	if !metricAtLeast(t, s, `gchd_limits_rejections_total{limit="connections"}`, 2) {
		t.Fatal("refused connections not counted")
	}
}

// waitOpen waits until 127.0.0.1 holds n HTTP connection slots.
func waitOpen(t *testing.T, s *server, n int) {
	t.Helper()
	for i := 0; s.app.guards.httpConns.Open("127.0.0.1") != n; i++ {
		if i == 500 {
			t.Fatalf("127.0.0.1 holds %d HTTP connections, want %d", s.app.guards.httpConns.Open("127.0.0.1"), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
