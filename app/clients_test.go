package app

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The real softphones of the test suite (baresip, linphonec) run as child
// processes driven through their standard input; what they print is kept
// and waited on, so that no test sleeps for a fixed time.
// GCHD_TEST_CLIENT_LOG=1 logs what each printed.

// clientWait bounds every wait on a softphone: they answer in
// milliseconds, and a slow shared machine still well within this.
const clientWait = 15 * time.Second

// needClient skips the test, loudly, when a softphone is not installed.
func needClient(t *testing.T, bin, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("SKIPPED: %s is not installed (Debian package %s; ./test.sh installs it as root): this test of gchd with a real %s did not run", bin, pkg, bin)
	}
	return path
}

// clientProc is a running softphone with its output.
type clientProc struct {
	t      testing.TB
	name   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	quit   string // the command that ends it cleanly
	mu     sync.Mutex
	out    bytes.Buffer
	mark   int // output before this offset was matched already
	notify chan struct{}
	exited chan struct{}
}

// startClient runs bin with args in dir and env; it is asked to quit, then
// killed, when the test ends.
func startClient(t testing.TB, name, quit, dir string, env []string, bin string, args ...string) *clientProc {
	t.Helper()
	p := &clientProc{t: t, name: name, quit: quit, notify: make(chan struct{}, 1), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), env...)
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = (*procWriter)(p)
	p.cmd.Stderr = (*procWriter)(p)
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p
}

type procWriter clientProc

func (w *procWriter) Write(b []byte) (int, error) {
	p := (*clientProc)(w)
	p.mu.Lock()
	p.out.Write(b)
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
	return len(b), nil
}

// send types a command line.
func (p *clientProc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: type %q: %v", p.name, line, err)
	}
}

// output is everything the softphone printed so far.
func (p *clientProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// expect waits until the softphone prints every one of parts, in one
// stretch of output after what earlier expects matched, and returns that
// output; later expects start after it.
func (p *clientProc) expect(parts ...string) string {
	p.t.Helper()
	out, err := p.await(clientWait, parts...)
	if err != nil {
		p.t.Fatalf("%s %v; its output:\n%s", p.name, err, tail([]byte(p.output()), 4000))
	}
	return out
}

// await is expect that gives up after d with an error.
func (p *clientProc) await(d time.Duration, parts ...string) (string, error) {
	deadline := time.After(d)
	for {
		p.mu.Lock()
		rest := p.out.String()[p.mark:]
		end, ok := 0, true
		for _, part := range parts {
			i := strings.Index(rest, part)
			if i < 0 {
				ok = false
				break
			}
			end = max(end, i+len(part))
		}
		if ok {
			p.mark += end
		}
		p.mu.Unlock()
		if ok {
			return rest[:end], nil
		}
		select {
		case <-p.notify:
		case <-time.After(50 * time.Millisecond):
		case <-p.exited:
			return "", fmt.Errorf("exited while waiting for %q", parts)
		case <-deadline:
			return "", fmt.Errorf("did not print %q within %s", parts, d)
		}
	}
}

// stop asks the softphone to quit (it unregisters) and kills it if it
// does not.
func (p *clientProc) stop() {
	if os.Getenv("GCHD_TEST_CLIENT_LOG") != "" {
		defer func() { p.t.Logf("%s printed:\n%s", p.name, p.output()) }()
	}
	select {
	case <-p.exited:
		return
	default:
	}
	io.WriteString(p.stdin, p.quit+"\n")
	select {
	case <-p.exited:
	case <-time.After(3 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// waitBinding waits until gchd holds a binding of login over transport.
func waitBinding(t testing.TB, s *server, login, transport string) {
	t.Helper()
	deadline := time.Now().Add(clientWait)
	for {
		for _, b := range s.app.bindings.Lookup(login) {
			if strings.EqualFold(b.Transport, transport) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %s binding in gchd: %v", login, transport, s.app.bindings.Lookup(login))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNoBinding waits until gchd holds no binding of login.
func waitNoBinding(t testing.TB, s *server, login string) {
	t.Helper()
	deadline := time.Now().Add(clientWait)
	for len(s.app.bindings.Lookup(login)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s is still registered: %v", login, s.app.bindings.Lookup(login))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// silenceWAV writes seconds of 8 kHz mono silence, the audio source of a
// softphone without a sound card (G.711 wants 8 kHz).
func silenceWAV(t testing.TB, dir string, seconds int) string {
	t.Helper()
	data := make([]byte, 8000*2*seconds)
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(36+len(data)))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(8000), uint32(16000), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v) // PCM, mono, 8 kHz, 16 bits
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(len(data)))
	b.Write(data)
	path := filepath.Join(dir, "silence.wav")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// groupMessages lists a group's texts through the API, as "login: text".
func groupMessages(t *testing.T, s *server, login string, id uint32) []string {
	t.Helper()
	var hist struct {
		M []struct {
			K, L, DN, MB string
		}
	}
	s.must(login, "getMessages", map[string]any{"id": id, "limit": 200}).json(t, &hist)
	var out []string
	for _, m := range hist.M {
		if m.K == "MSG" {
			out = append(out, fmt.Sprintf("%s: %s", m.L, m.MB))
		}
	}
	return out
}

// waitGroupMessage waits until the group's history holds want.
func waitGroupMessage(t *testing.T, s *server, login string, id uint32, want string) {
	t.Helper()
	deadline := time.Now().Add(clientWait)
	for {
		got := groupMessages(t, s, login, id)
		for _, m := range got {
			if m == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d history %q lacks %q", id, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
