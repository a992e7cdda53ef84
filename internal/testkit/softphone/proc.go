// Package softphone runs the real softphones of the test suite, baresip
// and linphonec, as child processes driven through their standard input.
// What they print is kept and waited on, so that no test sleeps for a
// fixed time. GCHD_TEST_CLIENT_LOG=1 logs what each printed.
//
// It knows the softphones, not gchd: a test names the registrar's address
// and the account, and waits for the registration in its own server.
package softphone

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

// Wait bounds every wait on a softphone: they answer in milliseconds, and
// a slow shared machine still well within this.
const Wait = 15 * time.Second

// Account is what a softphone needs to register.
type Account struct {
	Login, Password, Domain string
	Transport               string // UDP or TCP
	Addr                    string // the registrar and outbound proxy, host:port
}

// Need skips the test, loudly, when a softphone is not installed, and
// returns its path.
func Need(t testing.TB, bin, pkg string) string {
	t.Helper()
	path, err := exec.LookPath(bin)
	if err != nil {
		t.Skipf("SKIPPED: %s is not installed (Debian package %s; ./test.sh installs it as root): this test of gchd with a real %s did not run", bin, pkg, bin)
	}
	return path
}

// Proc is a running softphone with its output.
type Proc struct {
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

// Start runs bin with args in dir and env; it is asked to quit (with the
// command quit), then killed, when the test ends.
func Start(t testing.TB, name, quit, dir string, env []string, bin string, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, name: name, quit: quit, notify: make(chan struct{}, 1), exited: make(chan struct{})}
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
	t.Cleanup(p.Stop)
	return p
}

type procWriter Proc

func (w *procWriter) Write(b []byte) (int, error) {
	p := (*Proc)(w)
	p.mu.Lock()
	p.out.Write(b)
	p.mu.Unlock()
	select {
	case p.notify <- struct{}{}:
	default:
	}
	return len(b), nil
}

// Send types a command line.
func (p *Proc) Send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: type %q: %v", p.name, line, err)
	}
}

// Output is everything the softphone printed so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// Expect waits until the softphone prints every one of parts, in one
// stretch of output after what earlier expects matched, and returns that
// output; later expects start after it.
func (p *Proc) Expect(parts ...string) string {
	p.t.Helper()
	out, err := p.Await(Wait, parts...)
	if err != nil {
		p.t.Fatalf("%s %v; its output:\n%s", p.name, err, tail(p.Output(), 4000))
	}
	return out
}

// Await is Expect that gives up after d with an error.
func (p *Proc) Await(d time.Duration, parts ...string) (string, error) {
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

// Stop asks the softphone to quit (it unregisters) and kills it if it
// does not.
func (p *Proc) Stop() {
	if os.Getenv("GCHD_TEST_CLIENT_LOG") != "" {
		defer func() { p.t.Logf("%s printed:\n%s", p.name, p.Output()) }()
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

// tail is the end of s, at most n bytes.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}

// SilenceWAV writes seconds of 8 kHz mono silence into dir, the audio
// source of a softphone without a sound card (G.711 wants 8 kHz).
func SilenceWAV(t testing.TB, dir string, seconds int) string {
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
