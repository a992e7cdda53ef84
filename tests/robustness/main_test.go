// Package robustness feeds gchd hostile and malformed SIP from real sockets:
// the RFC 4475 torture messages (rfc4475_test.go) and the PROTOS c07-sip
// suite (protos_test.go), both read from the shared corpora directory
// (../shared/corpora from the repository root, or GCHD_CORPORA). Each test
// starts a real gchd (app.New and Run) on ephemeral ports.
package robustness

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/app"
	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
	"gchd/storage"
)

const domain = testkit.Domain

// TestMain shortens sipgo's transaction timers. They are package globals of
// sipgo, read without synchronisation, so they are set here, before any
// user agent exists; this package is its own test binary, so nothing else
// sees them. With T1 = 50 ms a UDP INVITE server transaction that got no
// ACK lives 64*T1 = 3.2 s (Timer H) instead of 32 s, and a completed UDP
// non-INVITE one 3.2 s (Timer J). Timer D (client INVITE transaction after
// a non-2xx answer) is a fixed 32 s in sipgo, not derived from T1; it is
// set to 64*T1 too. The PROTOS test needs this to see goroutines and heap
// come back to baseline within its time budget.
func TestMain(m *testing.M) {
	sip.SetTimers(50*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond)
	sip.Timer_D = sip.Timer_B
	os.Exit(m.Run())
}

// corpus returns the directory of one corpus, or skips the test when the
// corpora are not there.
func corpus(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("GCHD_CORPORA")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "..", "shared", "corpora")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("corpus %s is not available (%v); set GCHD_CORPORA to the directory holding rfc4475/ and protos-c07-sip/", p, err)
	}
	return p
}

// repoRoot is the directory holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// gchd is a running server.
type gchd struct {
	t      testing.TB
	app    *app.App
	run    *testkit.Running[*app.App]
	udp    *net.UDPAddr
	tcp    string
	canary *canary
}

// startGCHD starts a server for domain test.local on a fresh SQLite
// database holding an account (password "pw-"+login) for each login.
func startGCHD(t testing.TB, mutate func(*configs.Config), logins ...string) *gchd {
	t.Helper()
	cfg := testkit.Config(t, storage.SQLite)
	// Hostile input meets gchd as deployed: the limits stay at their defaults.
	cfg.Limits = configs.Default().Limits
	cfg.Registrar.Node = "robustness"
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	testkit.AddAccounts(t, cfg.Database, cfg.Domain, logins...)

	g := &gchd{t: t, canary: newCanary(t)}
	g.run = testkit.Start(t, func(ctx context.Context) (*app.App, error) { return app.New(ctx, cfg, testkit.Logger()) })
	g.app = g.run.Server
	udp, err := net.ResolveUDPAddr("udp", g.app.SIPAddr("UDP"))
	if err != nil {
		t.Fatal(err)
	}
	g.udp, g.tcp = udp, g.app.SIPAddr("TCP")
	// Registered after Start's cleanup, so it runs first: the canary is
	// checked once gchd has stopped.
	t.Cleanup(func() {
		g.stop()
		g.canary.check(t)
	})
	return g
}

// canary is an address on 127.0.0.2 that nothing gchd is sent may make it
// reach: a TCP listener and a UDP socket counting what arrives. Every run
// against gchd watches it (startGCHD), and reflectionCases aim at it.
type canary struct {
	tcp   net.Listener
	udp   net.PacketConn
	conns atomic.Int64
	grams atomic.Int64
}

func newCanary(t testing.TB) *canary {
	t.Helper()
	c := &canary{}
	var err error
	if c.tcp, err = net.Listen("tcp", "127.0.0.2:0"); err != nil {
		t.Fatalf("canary on 127.0.0.2 (Linux routes 127.0.0.0/8 to lo): %v", err)
	}
	if c.udp, err = net.ListenPacket("udp", "127.0.0.2:0"); err != nil {
		t.Fatalf("canary: %v", err)
	}
	go func() {
		for {
			conn, err := c.tcp.Accept()
			if err != nil {
				return
			}
			c.conns.Add(1)
			conn.Close()
		}
	}()
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := c.udp.ReadFrom(buf); err != nil {
				return
			}
			c.grams.Add(1)
		}
	}()
	return c
}

// check fails the test if anything reached the canary, and closes it.
func (c *canary) check(t testing.TB) {
	t.Helper()
	time.Sleep(200 * time.Millisecond) // what is under way arrives
	c.tcp.Close()
	c.udp.Close()
	if n, m := c.conns.Load(), c.grams.Load(); n+m > 0 {
		t.Errorf("gchd reached the canary on 127.0.0.2: %d TCP connections, %d datagrams", n, m)
	}
}

// reflectionCases send what once made gchd reach an address a message
// merely named: TCP requests whose top Via (or its received= and rport=)
// names the canary, from a client that hangs up at once (sipgo dialled the
// Via to answer), and forged 2xx responses to an INVITE with gchd's branch
// prefix on top and the canary in the second Via (relayed along the Via
// path to any address gchd had heard from: the canary sends a keep-alive
// first). It returns how many it sent.
func (g *gchd) reflectionCases(t testing.TB) int {
	t.Helper()
	tcpPort := g.canary.tcp.Addr().(*net.TCPAddr).Port
	udpPort := g.canary.udp.LocalAddr().(*net.UDPAddr).Port
	sent := 0
	for i := range 30 {
		via := fmt.Sprintf("127.0.0.2:%d", tcpPort)
		if i%2 == 1 {
			via = fmt.Sprintf("127.0.0.1:5999;received=127.0.0.2;rport=%d", tcpPort)
		}
		method := [...]string{"OPTIONS", "MESSAGE", "INVITE"}[i%3]
		c, err := net.Dial("tcp", g.tcp)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "%s sip:alice@%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-refl%d\r\n"+
			"From: <sip:scan@%s>;tag=s%d\r\nTo: <sip:alice@%s>\r\nCall-ID: refl-%d\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\n"+
			"Content-Length: 0\r\n\r\n", method, domain, via, i, domain, i, domain, i, method)
		c.Close()
		sent++
	}
	if _, err := g.canary.udp.WriteTo([]byte("\r\n\r\n"), g.udp); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	c, err := net.DialUDP("udp", nil, g.udp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := range 20 {
		fmt.Fprintf(c, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-gcx%d-abcdef\r\n"+
			"Via: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bKvictim%d;rport=%d;received=127.0.0.2\r\n"+
			"From: <sip:a@%s>;tag=a\r\nTo: <sip:alice@%s>;tag=b\r\nCall-ID: stray-%d\r\nCSeq: 1 INVITE\r\n"+
			"Content-Length: 0\r\n\r\n", g.udp, i, udpPort, i, udpPort, domain, domain, i)
		sent++
	}
	time.Sleep(500 * time.Millisecond)
	return sent
}

// alive fails the test if Run has returned: the server must serve until it
// is stopped.
func (g *gchd) alive(t testing.TB) {
	t.Helper()
	g.run.Alive(t)
}

func (g *gchd) stop() { g.run.Stop() }

// counter sums every series of a counter family of the server's metrics.
func (g *gchd) counter(name string) float64 {
	mfs, err := g.app.Registry().Gather()
	if err != nil {
		g.t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// relayed counts the requests gchd has sent (forwarded or originated).
func (g *gchd) relayed() float64 { return g.counter("gchd_sip_requests_sent_total") }

// handled counts the requests that reached one of gchd's handlers.
func (g *gchd) handled() float64 { return g.counter("gchd_sip_requests_received_total") }

// msg is a SIP message as the tests read it: a small parser of its own, so
// that gchd's answers are not judged only by the stack that wrote them.
type msg struct {
	request bool
	version string // responses
	method  string // requests
	ruri    string // requests
	code    int    // responses
	reason  string // responses
	headers []header
	body    []byte
}

type header struct{ name, value string }

// compact maps the compact header forms (RFC 3261 7.3.3) to full names.
var compact = map[string]string{
	"i": "call-id", "v": "via", "f": "from", "t": "to", "l": "content-length", "m": "contact",
	"c": "content-type", "k": "supported", "s": "subject", "e": "content-encoding", "o": "event",
	"r": "refer-to", "u": "allow-events", "x": "session-expires", "b": "referred-by",
}

// parseMsg parses a message leniently: folded lines are joined, compact
// names expanded, the body is what follows the empty line (cut to
// Content-Length when that is shorter).
func parseMsg(b []byte) (*msg, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return nil, errors.New("no end of headers")
	}
	lines := strings.Split(string(head), "\r\n")
	m := &msg{body: body}
	first := strings.SplitN(lines[0], " ", 3)
	if len(first) < 2 {
		return nil, fmt.Errorf("bad start line %q", lines[0])
	}
	if strings.HasPrefix(first[0], "SIP/") {
		code, err := strconv.Atoi(first[1])
		if err != nil {
			return nil, fmt.Errorf("bad status line %q", lines[0])
		}
		m.code, m.version = code, first[0]
		if len(first) == 3 {
			m.reason = first[2]
		}
	} else {
		m.request = true
		m.method, m.ruri = first[0], first[1]
	}
	for _, l := range lines[1:] {
		if (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) && len(m.headers) > 0 {
			m.headers[len(m.headers)-1].value += " " + strings.TrimSpace(l)
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if full, ok := compact[name]; ok {
			name = full
		}
		m.headers = append(m.headers, header{name, strings.TrimSpace(value)})
	}
	if n, err := strconv.Atoi(m.get("content-length")); err == nil && n >= 0 && n < len(m.body) {
		m.body = m.body[:n]
	}
	return m, nil
}

// get returns the first value of a header ("" if absent).
func (m *msg) get(name string) string {
	for _, h := range m.headers {
		if h.name == name {
			return h.value
		}
	}
	return ""
}

// all returns every value of a header.
func (m *msg) all(name string) []string {
	var out []string
	for _, h := range m.headers {
		if h.name == name {
			out = append(out, h.value)
		}
	}
	return out
}

// cseq returns the CSeq number and method.
func (m *msg) cseq() (int, string) {
	n, method, _ := strings.Cut(m.get("cseq"), " ")
	v, _ := strconv.Atoi(n)
	return v, strings.TrimSpace(method)
}

// branch returns the branch of the top Via.
func (m *msg) branch() string {
	via := m.get("via")
	if i := strings.Index(via, ","); i >= 0 {
		via = via[:i]
	}
	for _, p := range strings.Split(via, ";")[1:] {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.TrimSpace(k), "branch") {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m *msg) String() string {
	if m.request {
		return m.method + " " + m.ruri
	}
	return fmt.Sprintf("%d %s", m.code, m.reason)
}

// udpPeer is a SIP endpoint on a UDP socket. A reader hands responses to
// whoever waits for their Call-ID, acknowledges non-2xx final responses to
// INVITE as a UAC transaction would, and passes requests to onRequest.
type udpPeer struct {
	conn   *net.UDPConn
	server *net.UDPAddr

	mu        sync.Mutex
	waiters   map[string]chan *msg // by Call-ID, or branchKey(branch)
	inviteURI map[string]string    // Call-ID -> Request-URI of INVITEs sent, for ACKs
	unmatched int                  // responses nobody waited for
	garbage   int                  // datagrams that did not parse

	onRequest func(m *msg, raw []byte, from *net.UDPAddr)
	done      chan struct{}
}

// newUDPPeer opens a UDP socket on laddr.
func newUDPPeer(t testing.TB, laddr string, server *net.UDPAddr) (*udpPeer, error) {
	a, err := net.ResolveUDPAddr("udp", laddr)
	if err != nil {
		return nil, err
	}
	conn, err := net.ListenUDP("udp", a)
	if err != nil {
		return nil, err
	}
	conn.SetReadBuffer(4 << 20)
	p := &udpPeer{conn: conn, server: server, waiters: map[string]chan *msg{},
		inviteURI: map[string]string{}, done: make(chan struct{})}
	go p.read()
	t.Cleanup(p.close)
	return p, nil
}

func (p *udpPeer) close() {
	p.conn.Close()
	<-p.done
}

func (p *udpPeer) addr() *net.UDPAddr { return p.conn.LocalAddr().(*net.UDPAddr) }

func (p *udpPeer) read() {
	defer close(p.done)
	buf := make([]byte, 65535)
	for {
		n, from, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		raw := append([]byte(nil), buf[:n]...)
		m, err := parseMsg(raw)
		if err != nil {
			p.mu.Lock()
			p.garbage++
			p.mu.Unlock()
			continue
		}
		if m.request {
			if p.onRequest != nil {
				p.onRequest(m, raw, from)
			}
			continue
		}
		if _, method := m.cseq(); method == "INVITE" && m.code >= 300 {
			p.ack(m)
		}
		p.mu.Lock()
		ch, ok := p.waiters[m.get("call-id")]
		if !ok {
			ch, ok = p.waiters[branchKey(m.branch())]
		}
		if !ok {
			p.unmatched++
		}
		p.mu.Unlock()
		if ok {
			select {
			case ch <- m:
			default:
			}
		}
	}
}

// ack acknowledges a non-2xx final response to an INVITE (RFC 3261
// 17.1.1.3): same top Via, From, Call-ID; To with the response's tag.
func (p *udpPeer) ack(res *msg) {
	callID := res.get("call-id")
	p.mu.Lock()
	ruri, ok := p.inviteURI[callID]
	p.mu.Unlock()
	if !ok {
		return
	}
	n, _ := res.cseq()
	via := res.get("via")
	if i := strings.Index(via, ","); i >= 0 {
		via = via[:i]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "ACK %s SIP/2.0\r\nVia: %s\r\nMax-Forwards: 70\r\nFrom: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d ACK\r\nContent-Length: 0\r\n\r\n",
		ruri, via, res.get("from"), res.get("to"), callID, n)
	p.conn.WriteToUDP([]byte(b.String()), p.server)
}

// send sends a datagram to the server, remembering the Request-URI of an
// INVITE for its ACK.
func (p *udpPeer) send(raw []byte) error {
	if bytes.HasPrefix(raw, []byte("INVITE ")) {
		if ids := headerLines(raw, "call-id", "i"); len(ids) > 0 {
			line, _, _ := bytes.Cut(raw, []byte("\r\n"))
			if f := strings.Fields(string(line)); len(f) == 3 {
				p.mu.Lock()
				p.inviteURI[ids[0]] = f[1]
				p.mu.Unlock()
			}
		}
	}
	_, err := p.conn.WriteToUDP(raw, p.server)
	return err
}

// forget drops what send remembered of an INVITE once its answer (and
// so the ACK) is done with.
func (p *udpPeer) forget(callID string) {
	p.mu.Lock()
	delete(p.inviteURI, callID)
	p.mu.Unlock()
}

// headerLines returns the values of the header lines named name (or its
// compact form), read directly from the raw octets: some torture messages
// do not parse at all.
func headerLines(raw []byte, name, short string) []string {
	var out []string
	head, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	_, rest, _ := bytes.Cut(head, []byte("\r\n"))
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		n, v, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		n = bytes.ToLower(bytes.TrimSpace(n))
		if string(n) == name || (short != "" && string(n) == short) {
			out = append(out, string(bytes.TrimSpace(v)))
		}
	}
	return out
}

// exchange sends raw and collects the responses with its Call-ID and CSeq
// number (-1: any) until a final one arrives or wait passes.
func (p *udpPeer) exchange(raw []byte, callID string, cseq int, wait time.Duration) (final *msg, all []*msg, err error) {
	var cseqs []int
	if cseq >= 0 {
		cseqs = []int{cseq}
	}
	return p.exchangeAny(raw, []string{callID}, withCSeq(cseqs...), wait)
}

// withCSeq accepts the responses with one of the CSeq numbers (any, when
// none is given).
func withCSeq(cseqs ...int) func(*msg) bool {
	return func(m *msg) bool {
		n, _ := m.cseq()
		return len(cseqs) == 0 || slices.Contains(cseqs, n)
	}
}

// branchKey is the waiter key of a top Via branch, for answers whose
// Call-ID is missing or mangled.
func branchKey(branch string) string { return "branch " + branch }

// exchangeAny is exchange for a message known by several keys (Call-IDs,
// or branchKey(branch)): a response with any of them that accept takes is
// the answer.
func (p *udpPeer) exchangeAny(raw []byte, keys []string, accept func(*msg) bool, wait time.Duration) (final *msg, all []*msg, err error) {
	callIDs := keys
	ch := make(chan *msg, 64)
	p.mu.Lock()
	for _, id := range callIDs {
		p.waiters[id] = ch
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		for _, id := range callIDs {
			delete(p.waiters, id)
		}
		p.mu.Unlock()
	}()
	if err := p.send(raw); err != nil {
		return nil, nil, err
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case m := <-ch:
			if !accept(m) {
				continue // a late answer to an earlier request
			}
			all = append(all, m)
			if m.code >= 200 {
				return m, all, nil
			}
		case <-timer.C:
			return nil, all, nil
		}
	}
}

// ping sends an OPTIONS to the server itself and returns its final answer.
func (p *udpPeer) ping(wait time.Duration) (*msg, error) {
	id := randHex(8)
	a := p.addr()
	raw := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;rport;branch=z9hG4bK-ping-%s\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=%s\r\nTo: <sip:%s>\r\n"+
		"Call-ID: ping-%s\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
		domain, a, id, domain, id, domain, id)
	final, _, err := p.exchange([]byte(raw), "ping-"+id, 1, wait)
	if err != nil {
		return nil, err
	}
	if final == nil {
		return nil, fmt.Errorf("no answer to OPTIONS within %v", wait)
	}
	return final, nil
}

// mustPing fails the test unless the server answers an OPTIONS with 200
// within 2 s.
func (p *udpPeer) mustPing(t testing.TB, after string) {
	t.Helper()
	res, err := p.ping(2 * time.Second)
	switch {
	case err != nil:
		t.Fatalf("after %s: %v", after, err)
	case res.code != 200:
		t.Fatalf("after %s: OPTIONS answered %s, want 200", after, res)
	}
}

// counts returns the responses nobody waited for and the datagrams that
// did not parse.
func (p *udpPeer) counts() (unmatched, garbage int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.unmatched, p.garbage
}

// readStream reads SIP messages from a stream connection until it closes
// or wait passes. closed tells whether the server closed it, and when.
func readStream(conn net.Conn, wait time.Duration) (msgs []*msg, closed bool, after time.Duration) {
	start := time.Now()
	conn.SetReadDeadline(start.Add(wait))
	r := bufio.NewReader(conn)
	for {
		var head bytes.Buffer
		for {
			line, err := r.ReadString('\n')
			head.WriteString(line)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return msgs, false, time.Since(start)
				}
				return msgs, true, time.Since(start) // EOF or reset: closed by the server
			}
			if line == "\r\n" && head.Len() > 2 {
				break
			}
			if line == "\r\n" {
				head.Reset() // keep-alive CRLF
			}
		}
		m, err := parseMsg(head.Bytes())
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(m.get("content-length")); err == nil && n > 0 {
			body := make([]byte, n)
			if _, err := io.ReadFull(r, body); err != nil {
				return append(msgs, m), true, time.Since(start)
			}
			m.body = body
		}
		msgs = append(msgs, m)
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sink is a UDP user agent gchd can relay to: it records every request and
// answers at once, INVITE with 486 Busy Here, CANCEL and anything else but
// ACK with 200, so that no forwarded transaction waits for a timer.
type sink struct {
	*udpPeer
	mu       sync.Mutex
	keep     bool // keep what it receives, for requests()
	received []*msg
	invites  int
}

func newSink(t testing.TB, server *net.UDPAddr) *sink {
	t.Helper()
	p, err := newUDPPeer(t, "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	s := &sink{udpPeer: p}
	p.onRequest = s.answer
	return s
}

func (s *sink) answer(m *msg, raw []byte, from *net.UDPAddr) {
	s.mu.Lock()
	if s.keep && len(s.received) < 100 {
		s.received = append(s.received, m)
	}
	if m.method == "INVITE" {
		s.invites++
	}
	s.mu.Unlock()
	code, reason := 200, "OK"
	switch m.method {
	case "ACK":
		return
	case "INVITE":
		code, reason = 486, "Busy Here"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, v := range m.all("via") {
		fmt.Fprintf(&b, "Via: %s\r\n", v)
	}
	to := m.get("to")
	if !strings.Contains(to, ";tag=") {
		to += ";tag=sink"
	}
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %s\r\nContent-Length: 0\r\n\r\n",
		m.get("from"), to, m.get("call-id"), m.get("cseq"))
	s.conn.WriteToUDP([]byte(b.String()), from)
}

// requests returns what the sink received (the first 100, if keep is set).
func (s *sink) requests() []*msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*msg(nil), s.received...)
}

// register binds login's address-of-record to the sink, answering the
// digest challenge.
func (s *sink) register(t testing.TB, login string) {
	t.Helper()
	callID := "reg-" + randHex(8)
	build := func(cseq int, auth string) []byte {
		a := s.addr()
		var b strings.Builder
		fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;rport;branch=z9hG4bK-reg-%s\r\n", domain, a, randHex(6))
		fmt.Fprintf(&b, "Max-Forwards: 70\r\nFrom: <sip:%s@%s>;tag=%s\r\nTo: <sip:%s@%s>\r\n", login, domain, randHex(4), login, domain)
		fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\nContact: <sip:%s@%s>\r\nExpires: 3600\r\n", callID, cseq, login, a)
		if auth != "" {
			fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
		}
		b.WriteString("Content-Length: 0\r\n\r\n")
		return []byte(b.String())
	}
	res, _, err := s.exchange(build(1, ""), callID, 1, 2*time.Second)
	if err != nil || res == nil || res.code != 401 {
		t.Fatalf("REGISTER %s: %v %v, want a 401 challenge", login, res, err)
	}
	auth, err := sipua.Authorize(res.get("www-authenticate"), "REGISTER", "sip:"+domain, login, testkit.Password(login))
	if err != nil {
		t.Fatal(err)
	}
	res, _, err = s.exchange(build(2, auth), callID, 2, 2*time.Second)
	if err != nil || res == nil || res.code != 200 {
		t.Fatalf("REGISTER %s with credentials: %v %v, want 200", login, res, err)
	}
}
