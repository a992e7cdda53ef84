package app

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gchd/registrar"
	"gchd/storage"
)

// freePorts finds a port free for UDP and TCP, and a TCP port.
func freePorts(t *testing.T) (sip, http int) {
	t.Helper()
	udp, tcp, err := listenBoth()
	if err != nil {
		t.Fatal(err)
	}
	sip = udp.LocalAddr().(*net.UDPAddr).Port
	udp.Close()
	tcp.Close()
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	http = l.Addr().(*net.TCPAddr).Port
	l.Close()
	return sip, http
}

func listenBoth() (net.PacketConn, net.Listener, error) {
	for i := 0; i < 20; i++ {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, nil, err
		}
		tcp, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", udp.LocalAddr().(*net.UDPAddr).Port))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
	}
	return nil, nil, fmt.Errorf("no port free for both UDP and TCP")
}

// process is gchd running as a child process.
type process struct {
	cmd  *exec.Cmd
	base string
}

func startProcess(t *testing.T, bin string, env []string, httpPort int) *process {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), env...)
	logf, _ := os.Create(filepath.Join(t.TempDir(), "gchd.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, base: fmt.Sprintf("http://127.0.0.1:%d", httpPort)}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if res, err := http.Get(p.base + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("gchd did not become ready")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// buildBinary compiles gchd once per test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gchd")
	out, err := exec.Command("go", "build", "-o", bin, "gchd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// Killing the server with SIGKILL in the middle of a burst loses nothing:
// after a restart, every message that was answered 200 reaches every
// member's phone.
func TestKillDuringBurstLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	bin := buildBinary(t)
	sipPort, httpPort := freePorts(t)
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "gchd.db")
	env := []string{
		"GCHD_DOMAIN=" + testDomain, "GCHD_DATABASE=" + dsn,
		fmt.Sprintf("GCHD_SIP_ADDR=127.0.0.1:%d", sipPort), fmt.Sprintf("GCHD_HTTP_ADDR=127.0.0.1:%d", httpPort),
		"GCHD_LOG_LEVEL=warn",
	}
	// Accounts, made before the server starts.
	db, err := storage.Open(context.Background(), dsn, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	accounts := registrar.NewAccounts(db.AccountStore(), testDomain)
	logins := []string{"own", "ann", "bob"}
	for _, l := range logins {
		if err := accounts.Add(context.Background(), l, "pw-"+l, ""); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()

	proc := startProcess(t, bin, env, httpPort)
	// A stand-in for the test server: the phone harness needs an address.
	sh := &server{t: t, base: proc.base, client: &http.Client{Timeout: 30 * time.Second}}
	var g struct{ ID uint32 }
	sh.must("own", "addGroup", map[string]any{"gs": "crash", "gm": []map[string]string{{"l": "ann"}, {"l": "bob"}}}).json(t, &g)
	sh.must("ann", "joinGroup", map[string]any{"id": g.ID})
	sh.must("bob", "joinGroup", map[string]any{"id": g.ID})
	phones := map[string]*phone{}
	for _, l := range []string{"ann", "bob"} {
		p := newRemotePhone(t, l, fmt.Sprintf("127.0.0.1:%d", sipPort))
		p.register()
		phones[l] = p
	}

	// The burst: 8 senders post as fast as they can; after 1 s, SIGKILL.
	var mu sync.Mutex
	var acked []uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				form := url.Values{"gm": {"sendMessage"}, "pm": {fmt.Sprintf(`{"id":%d,"mb":"w%d-%d"}`, g.ID, w, i)}}
				req, _ := http.NewRequest(http.MethodPost, proc.base+"/gch.ashx", strings.NewReader(form.Encode()))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.SetBasicAuth("own", "pw-own")
				res, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				res.Body.Close()
				if res.StatusCode == 200 {
					mid, _ := strconv.ParseUint(res.Header.Get("X-GC-MID"), 10, 64)
					mu.Lock()
					acked = append(acked, mid)
					mu.Unlock()
				}
			}
		}(w)
	}
	time.Sleep(time.Second)
	proc.cmd.Process.Signal(syscall.SIGKILL)
	proc.cmd.Wait()
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	if n < 20 {
		t.Fatalf("only %d messages were accepted before the kill", n)
	}
	t.Logf("%d messages answered 200 before SIGKILL", n)

	// Restart on the same ports: the phones' UDP bindings are still valid.
	startProcess(t, bin, env, httpPort)
	for l, p := range phones {
		eventually30(t, func() bool {
			got := map[uint64]bool{}
			for _, nt := range notificationsOf(p.received()) {
				got[nt.mid] = true
			}
			for _, m := range acked {
				if !got[m] {
					return false
				}
			}
			return true
		}, fmt.Sprintf("%s's phone has every acknowledged message", l))
	}
}

func eventually30(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
