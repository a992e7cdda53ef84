package robustness

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
)

// protosGroup is one line of GROUPS.tsv.
type protosGroup struct {
	name         string
	first, count int
}

func readGroups(t *testing.T, dir string) []protosGroup {
	f, err := os.Open(filepath.Join(dir, "GROUPS.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []protosGroup
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 4 || c[0] == "group" {
			continue
		}
		first, err1 := strconv.Atoi(c[1])
		count, err2 := strconv.Atoi(c[2])
		if err1 != nil || err2 != nil {
			t.Fatalf("GROUPS.tsv: bad line %q", sc.Text())
		}
		out = append(out, protosGroup{name: c[0], first: first, count: count})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// protosCase is one case file: an INVITE template and its teardown.
type protosCase struct {
	n                int
	invite, teardown []byte
}

// readProtosCase splits a case file: "<length> <INVITE>" then "<length>
// <teardown>", lengths in bytes of the template.
func readProtosCase(n int, data []byte) (protosCase, error) {
	var parts [][]byte
	for len(data) > 0 && len(parts) < 2 {
		num, rest, ok := bytes.Cut(data, []byte(" "))
		size, err := strconv.Atoi(string(num))
		if !ok || err != nil || size < 0 || size > len(rest) {
			return protosCase{}, fmt.Errorf("case %d: bad length prefix %.20q", n, data)
		}
		parts = append(parts, rest[:size])
		data = rest[size:]
	}
	if len(parts) != 2 {
		return protosCase{}, fmt.Errorf("case %d: %d messages, want 2", n, len(parts))
	}
	return protosCase{n: n, invite: parts[0], teardown: parts[1]}, nil
}

// eachProtosCase streams the cases of cases.tar.gz in order, decompressing
// in memory as it goes (the unpacked suite is 37 MB).
func eachProtosCase(t *testing.T, dir string, fn func(c protosCase)) int {
	f, err := os.Open(filepath.Join(dir, "cases.tar.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	count := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return count
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		n, err := strconv.Atoi(filepath.Base(h.Name))
		if err != nil {
			t.Fatalf("unexpected member %s", h.Name)
		}
		if n != count {
			t.Fatalf("member %s out of order, want case %d", h.Name, count)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		c, err := readProtosCase(n, data)
		if err != nil {
			t.Fatal(err)
		}
		fn(c)
		count++
	}
}

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65507

// protosFill fills a template's placeholders as PROTOS does: the target
// user, our address and port, a Call-ID, CSeq and branch unique to the run
// and case, Content-Length computed over the body after filling.
func protosFill(tmpl []byte, fields *strings.Replacer) []byte {
	msg := []byte(fields.Replace(string(tmpl)))
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		msg = bytes.ReplaceAll(msg, []byte("<Content-Length>"), []byte(strconv.Itoa(len(msg)-i-4)))
	}
	return msg
}

// TestPROTOS runs the PROTOS c07-sip suite against gchd: each of the 4,527
// INVITEs and its CANCEL teardown over UDP, one case after the other (the
// next is sent once the INVITE has its final answer, or after 25 ms when
// none comes). 127.0.0.1 is a trusted network and the target user is
// registered at a sink that answers 486, so that what gchd parses goes all
// the way through its proxy, forwarded, cancelled and answered. After each
// of the 54 groups gchd must answer an OPTIONS with 200 within 2 s; at the
// end it must not have stopped, nor answered 500 (handle's recover turns a
// handler panic into a 500), and its goroutines and heap must be back near
// the baseline once the transactions have ended.
func TestPROTOS(t *testing.T) {
	if testing.Short() {
		t.Skip("PROTOS c07-sip: 4,527 cases, about 30 s; skipped with -short")
	}
	dir := corpus(t, "protos-c07-sip")
	groups := readGroups(t, dir)
	total := 0
	for _, gr := range groups {
		if gr.first != total {
			t.Fatalf("GROUPS.tsv: group %s starts at %d, want %d", gr.name, gr.first, total)
		}
		total += gr.count
	}
	if len(groups) != 54 || total != 4527 {
		t.Fatalf("GROUPS.tsv: %d groups, %d cases; want 54 and 4,527", len(groups), total)
	}

	g := startGCHD(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.1/32" }, "alice")
	s := newSink(t, g.udp)
	s.register(t, "alice")
	p, err := newUDPPeer(t, "127.0.0.1:0", g.udp)
	if err != nil {
		t.Fatal(err)
	}
	p.mustPing(t, "start")

	run := randHex(4)
	fill := func(n int) *strings.Replacer {
		return strings.NewReplacer(
			"<To>", "alice@"+domain,
			"<From>", "protos@127.0.0.1",
			"<From-Address>", "127.0.0.1",
			"<From-IP>", "127.0.0.1",
			"<Local-Port>", strconv.Itoa(p.addr().Port),
			"<Call-ID>", fmt.Sprintf("protos%07d-%s", n, run),
			"<CSeq>", strconv.Itoa(n+1),
			"<Branch-ID>", fmt.Sprintf("-%s-%07d", run, n),
			"<Teardown-Method>", "CANCEL",
		)
	}
	callID := func(n int) string { return fmt.Sprintf("protos%07d-%s@127.0.0.1", n, run) }

	// Warm up with the valid case, so that what gchd creates once (pools,
	// database connections, metric series) is in the baseline, then let its
	// transactions end.
	var valid protosCase
	eachProtosCase(t, dir, func(c protosCase) {
		if c.n == 0 {
			valid = c
		}
	})
	for i := range 3 {
		n := 1_000_000 + i // numbers no case has
		res, _, err := p.exchange(protosFill(valid.invite, fill(n)), callID(n), -1, 2*time.Second)
		if err != nil || res == nil || res.code != 486 {
			t.Fatalf("valid PROTOS INVITE: %v %v, want the sink's 486 relayed", res, err)
		}
	}
	goroutines0, heap0 := settle(t, 0)
	heapProfile("base")
	t.Logf("baseline: %d goroutines, heap %.1f MiB", goroutines0, mib(heap0))

	start := time.Now()
	answers := map[string]int{}
	var serverErrors, truncated []int
	group := 0
	count := eachProtosCase(t, dir, func(c protosCase) {
		f := fill(c.n)
		invite, teardown := protosFill(c.invite, f), protosFill(c.teardown, f)
		if len(invite) > maxDatagram || len(teardown) > maxDatagram {
			invite, teardown = invite[:min(len(invite), maxDatagram)], teardown[:min(len(teardown), maxDatagram)]
			truncated = append(truncated, c.n)
		}
		// The answer is known by its Call-ID, or by the branch when a
		// case mangles the Call-ID. Cases that mangle the branch may share
		// it: the answer to the previous case's CANCEL is not this one's.
		keys := []string{callID(c.n), branchKey(topBranch(invite))}
		final, _, err := p.exchangeAny(invite, keys, notCancel, 25*time.Millisecond)
		if err != nil {
			t.Fatalf("case %d: %v", c.n, err)
		}
		for _, id := range headerLines(invite, "call-id", "i") {
			p.forget(id)
		}
		if err := p.send(teardown); err != nil {
			t.Fatalf("case %d teardown: %v", c.n, err)
		}
		switch {
		case final == nil:
			answers["no reply"]++
		default:
			answers[strconv.Itoa(final.code)]++
			if final.code == 500 {
				serverErrors = append(serverErrors, c.n)
			}
		}
		if gr := groups[group]; c.n == gr.first+gr.count-1 {
			g.alive(t)
			p.mustPing(t, fmt.Sprintf("group %s (cases %d-%d)", gr.name, gr.first, c.n))
			group++
		}
	})
	elapsed := time.Since(start)
	if count != total {
		t.Fatalf("cases.tar.gz holds %d cases, want %d", count, total)
	}
	t.Logf("%d reflection and stray-response cases aimed at the canary on 127.0.0.2", g.reflectionCases(t))
	g.alive(t)
	p.mustPing(t, "the suite")
	if len(serverErrors) > 0 {
		t.Errorf("gchd answered 500 (a handler panicked or failed) to cases %v", serverErrors)
	}

	goroutines1, heap1 := settle(t, goroutines0)
	heapProfile("after")
	unmatched, garbage := p.counts()
	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var dist []string
	for _, k := range keys {
		dist = append(dist, fmt.Sprintf("%s: %d", k, answers[k]))
	}
	s.mu.Lock()
	forwarded := s.invites
	s.mu.Unlock()
	t.Logf("PROTOS c07-sip: %d cases in %d groups in %v (%.0f cases/s); %d cases cut to %d-byte datagrams (%v)",
		count, len(groups), elapsed.Round(time.Millisecond), float64(count)/elapsed.Seconds(), len(truncated), maxDatagram, truncated)
	t.Logf("final answers to the INVITEs: %s; %d forwarded to the registered user; %d late or unmatched responses, %d unparseable datagrams received",
		strings.Join(dist, ", "), forwarded, unmatched, garbage)
	t.Logf("goroutines: %d before, %d after; heap in use after GC: %.1f MiB before, %.1f MiB after",
		goroutines0, goroutines1, mib(heap0), mib(heap1))
	// Tolerances. Goroutines: every request gets its own goroutine and
	// every transaction its timers, all gone once the transactions end, so
	// the count must come back to the baseline; 5 allow for a runtime or
	// database-pool goroutine started or stopped in between. Heap: live
	// bytes after a GC. What gchd keeps by design is bounded and was
	// allocated before the baseline (the nonce-count ring, the metric
	// series, the sink's binding); a leak of one transaction, request or
	// connection per case would be at least 4,527 x ~1 KiB = 4.4 MiB. 2 MiB
	// allows for allocator and SQLite page-cache noise and still catches
	// that.
	if goroutines1 > goroutines0+5 {
		t.Errorf("goroutines: %d after the suite, %d before", goroutines1, goroutines0)
	}
	if heap1 > heap0+2<<20 {
		t.Errorf("heap: %.1f MiB after the suite, %.1f MiB before", mib(heap1), mib(heap0))
	}
}

// settle waits until gchd's transactions have ended, then returns the
// goroutine count and the live heap after a GC. A transaction lives at most
// 64*T1 while gchd waits for a forwarded request's answer (Timer B), then
// 64*T1 more waiting for an ACK or absorbing retransmissions (Timer H or
// J): settle waits that long first, then until the goroutine count has not
// changed for 2 s and is within 5 of want (want 0: any count), at most 20 s
// more.
func settle(t *testing.T, want int) (int, uint64) {
	start := time.Now()
	time.Sleep(sip.Timer_B + sip.Timer_H + time.Second)
	deadline := time.Now().Add(20 * time.Second)
	last, stableSince := runtime.NumGoroutine(), time.Now()
	for time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		if n := runtime.NumGoroutine(); n != last {
			last, stableSince = n, time.Now()
			continue
		}
		if time.Since(stableSince) >= 2*time.Second && (want == 0 || last <= want+5) {
			break
		}
	}
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("settled after %v", time.Since(start).Round(100*time.Millisecond))
	return runtime.NumGoroutine(), ms.HeapAlloc
}

// heapProfile writes what is live on the heap to
// $GCHD_PROTOS_HEAP_PROFILE.name, when set, for go tool pprof (-base).
func heapProfile(name string) {
	path := os.Getenv("GCHD_PROTOS_HEAP_PROFILE")
	if path == "" {
		return
	}
	if f, err := os.Create(path + "." + name); err == nil {
		pprof.Lookup("heap").WriteTo(f, 0)
		f.Close()
	}
}

func notCancel(m *msg) bool {
	_, method := m.cseq()
	return method != "CANCEL"
}

// topBranch returns the branch parameter of a message's first Via.
func topBranch(raw []byte) string {
	vias := headerLines(raw, "via", "v")
	if len(vias) == 0 {
		return ""
	}
	m := msg{headers: []header{{"via", vias[0]}}}
	return m.branch()
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
