package app

import (
	"bytes"
	"context"
	"fmt"
	"gchd/internal/testkit"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gchd/storage"
)

// run calls the command line in-process.
func run(t *testing.T, stdin string, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, Stdio{In: strings.NewReader(stdin), Out: &out, Err: &errb},
		func(k string) string { return env[k] })
	return code, out.String(), errb.String()
}

func TestAccountsCommands(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		env := map[string]string{
			"GCHD_DATABASE": testkit.DSN(t, engine),
			"GCHD_DOMAIN":   "example.org",
		}
		steps := []struct {
			stdin    string
			args     []string
			code     int
			out, err string
		}{
			{"s3cret\n", []string{"accounts", "add", "alice", "-display-name", "Alice Liddell"}, 0, "added alice@example.org", ""},
			{"x\n", []string{"accounts", "add", "-display-name", "B", "bob"}, 0, "added bob@example.org", ""},
			{"again\n", []string{"accounts", "add", "alice"}, 1, "", "already exists"},
			{"", []string{"accounts", "add", "carol"}, 1, "", "password"},
			{"p\n", []string{"accounts", "add", "gc-1"}, 2, "", "login"},
			{"p\n", []string{"accounts", "add", "a b"}, 2, "", "login"},
			{"", []string{"accounts", "list"}, 0, "alice  Alice Liddell", ""},
			{"n3w\n", []string{"accounts", "passwd", "alice"}, 0, "password of alice@example.org changed", ""},
			{"n3w\n", []string{"accounts", "passwd", "nobody"}, 1, "", "no such account"},
			{"", []string{"accounts", "del", "bob"}, 0, "deleted bob", ""},
			{"", []string{"accounts", "del", "bob"}, 1, "", "no such account"},
			{"", []string{"accounts", "rename", "x"}, 2, "", "unknown accounts command"},
			{"", []string{"accounts"}, 2, "", "add|passwd|del|list"},
			{"", []string{"migrate"}, 0, "schema version", ""},
			{"", []string{"version"}, 0, "gchd ", ""},
			{"", []string{"frobnicate"}, 2, "", "unknown command"},
		}
		for _, s := range steps {
			code, out, errOut := run(t, s.stdin, env, s.args...)
			if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.err) {
				t.Errorf("gchd %s: exit %d, out %q, err %q; want exit %d, out ~%q, err ~%q",
					strings.Join(s.args, " "), code, out, errOut, s.code, s.out, s.err)
			}
		}
		// The password set by passwd is what the server checks.
		cfg := testConfig(t, engine)
		cfg.Database, cfg.Domain = env["GCHD_DATABASE"], "example.org"
		srv := start(t, cfg)
		if r := srv.call("alice", "n3w", "getMyGroups", "{}"); r.status != 200 {
			t.Fatalf("login with the CLI's password: %s", r)
		}
		if r := srv.call("alice", "s3cret", "getMyGroups", "{}"); r.status != 401 {
			t.Fatalf("old password: %s", r)
		}
		// An account added while the server runs works at once.
		if code, _, errOut := run(t, "pw\n", env, "accounts", "add", "dave"); code != 0 {
			t.Fatalf("add while serving: %s", errOut)
		}
		if r := srv.call("dave", "pw", "getMyGroups", "{}"); r.status != 200 {
			t.Fatalf("account added while serving: %s", r)
		}
	})
}

func TestBadConfigurationStopsWithAClearMessage(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-http-addr", "nonsense"}, nil, "http.addr"},
		{nil, map[string]string{"GCHD_SIP_ADDR": "1.2.3.4:70000"}, "GCHD_SIP_ADDR"},
		{[]string{"-database", "oracle://x"}, nil, "database"},
		{[]string{"-config", "/nonexistent/gchd.yaml"}, nil, "config file"},
		{[]string{"-no-such-flag"}, nil, "flag provided but not defined"},
	} {
		code, _, errOut := run(t, "", c.env, append([]string{"serve"}, c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("serve %v %v: exit %d, %q; want a message naming %q", c.args, c.env, code, errOut, c.want)
		}
	}
	// A port that is taken is reported before anything is served.
	s := startEngine(t, "sqlite")
	code, _, errOut := run(t, "", map[string]string{"GCHD_DATABASE": "sqlite:" + filepath.Join(t.TempDir(), "x.db")},
		"-http-addr", s.app.HTTPAddr(), "-sip-addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "http.addr") || !strings.Contains(errOut, "address already in use") {
		t.Errorf("taken port: exit %d, %q", code, errOut)
	}
}

func TestAccountsImport(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		env := map[string]string{"GCHD_DATABASE": testConfig(t, engine).Database, "GCHD_DOMAIN": "example.org"}
		// Bad rows are reported by line and nothing is imported.
		bad := "login,password,display name\nalice,pw1,Alice\nb c,pw\nbob\nalice,again\ncarol,\n"
		code, out, errOut := run(t, bad, env, "accounts", "import", "-")
		for _, want := range []string{"line 3:", "line 4:", "line 5:", "already on line 2", "line 6:", "nothing imported"} {
			if !strings.Contains(errOut, want) {
				t.Errorf("bad file: stderr %q lacks %q", errOut, want)
			}
		}
		if code != 1 {
			t.Fatalf("bad file: exit %d, %q", code, out)
		}
		if _, out, _ := run(t, "", env, "accounts", "list"); strings.Contains(out, "alice") {
			t.Fatal("a bad file imported some rows")
		}
		// 10,000 accounts in one go, then again as updates.
		var b strings.Builder
		for i := 0; i < 10000; i++ {
			fmt.Fprintf(&b, "user%05d,pass%05d,User %d\n", i, i, i)
		}
		file := filepath.Join(t.TempDir(), "accounts.csv")
		os.WriteFile(file, []byte(b.String()), 0o600)
		start := time.Now()
		code, out, errOut = run(t, "", env, "accounts", "import", file)
		if code != 0 || !strings.Contains(out, "10000 added") {
			t.Fatalf("import: exit %d %q %q", code, out, errOut)
		}
		took := time.Since(start)
		t.Logf("imported 10,000 accounts into %s in %v", engine, took)
		if took > 30*time.Second {
			t.Errorf("import took %v", took)
		}
		if code, out, _ := run(t, "", env, "accounts", "import", file); code != 0 || !strings.Contains(out, "10000 updated") {
			t.Fatalf("re-import: %q", out)
		}
	})
}

func TestSendCommand(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "")
		var g struct{ ID uint32 }
		s.must("own", "addGroup", map[string]any{"gs": "smoke"}).json(t, &g)
		env := map[string]string{"GCHD_PASSWORD": "pw-own"}
		code, out, errOut := run(t, "", env, "send", "-url", s.base, "-user", "own", fmt.Sprint(g.ID), "smoke test")
		if code != 0 || !strings.HasPrefix(out, "sent as MID ") {
			t.Fatalf("send: exit %d, %q %q", code, out, errOut)
		}
		var hist struct{ M []struct{ MB string } }
		s.must("own", "getMessages", map[string]any{"id": g.ID}).json(t, &hist)
		if last := hist.M[len(hist.M)-1]; last.MB != "smoke test" {
			t.Fatalf("history ends with %+v", last)
		}
		// A wrong password, from standard input, is reported.
		if code, _, errOut := run(t, "wrong\n", nil, "send", "-url", s.base, "-user", "own", fmt.Sprint(g.ID), "x"); code != 1 || !strings.Contains(errOut, "401") {
			t.Fatalf("wrong password: exit %d, %q", code, errOut)
		}
	})
}
