package app

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer collects a process's output safely.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The real process: SIGHUP applies a changed log level and limits,
// SIGTERM stops it gracefully with exit code 0.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and signals a real process")
	}
	bin := buildBinary(t)
	sipPort, httpPort := freePorts(t)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "gchd.yaml")
	writeCfg := func(level string, httpRate int) {
		cfg := fmt.Sprintf("domain: %s\ndatabase: sqlite:%s\nsip:\n  addr: 127.0.0.1:%d\nhttp:\n  addr: 127.0.0.1:%d\nlog:\n  level: %s\nlimits:\n  http_rate: %d\n  http_burst: 1\nshutdown:\n  grace: 5s\n",
			testDomain, filepath.Join(dir, "gchd.db"), sipPort, httpPort, level, httpRate)
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("info", 0)
	var out syncBuffer
	cmd := exec.Command(bin, "-config", cfgFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	base := fmt.Sprintf("http://127.0.0.1:%d", httpPort)
	eventually30(t, func() bool {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
		}
		return err == nil && res.StatusCode == 200
	}, "ready")
	burst := func() (tooMany int) {
		for i := 0; i < 5; i++ {
			res, err := http.Get(base + "/gch.ashx")
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode == 429 {
				tooMany++
			}
		}
		return tooMany
	}
	if n := burst(); n != 0 {
		t.Fatalf("limited before the reload: %d of 5", n)
	}

	writeCfg("debug", 1)
	cmd.Process.Signal(syscall.SIGHUP)
	eventually30(t, func() bool { return strings.Contains(out.String(), "configuration reloaded") }, "reload logged")
	if n := burst(); n < 3 {
		t.Fatalf("after the reload to 1 request/s: %d of 5 limited", n)
	}
	if !strings.Contains(out.String(), "log_level=debug") {
		t.Fatalf("reload did not take the new log level:\n%s", out.String())
	}

	// A bad file on reload keeps the running configuration.
	os.WriteFile(cfgFile, []byte("log:\n  level: loud\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	eventually30(t, func() bool { return strings.Contains(out.String(), "configuration refused") }, "refusal logged")

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, out.String())
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("stopping took %v", took)
	}
	if !strings.Contains(out.String(), "gchd stopped") {
		t.Fatalf("no orderly stop in the log:\n%s", out.String())
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("still serving after the stop")
	}
}
