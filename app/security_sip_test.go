package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"gchd/configs"
)

// canary is an address on 127.0.0.2 that gchd must never reach: TCP
// listeners (one per port a scan would try) counting connections, and a
// UDP socket counting datagrams.
type canary struct {
	tcp   []net.Listener
	udp   net.PacketConn
	conns atomic.Int64
	grams atomic.Int64
	mu    sync.Mutex
	held  []net.Conn
}

func newCanary(t *testing.T, ports int) *canary {
	t.Helper()
	c := &canary{}
	for range ports {
		ln, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Skipf("no 127.0.0.2 on this machine: %v", err)
		}
		c.tcp = append(c.tcp, ln)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				// Held open, as a real listener would: each costs gchd a
				// descriptor for as long.
				c.conns.Add(1)
				c.mu.Lock()
				c.held = append(c.held, conn)
				c.mu.Unlock()
			}
		}()
	}
	var err error
	if c.udp, err = net.ListenPacket("udp", "127.0.0.2:0"); err != nil {
		t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := c.udp.ReadFrom(buf); err != nil {
				return
			}
			c.grams.Add(1)
		}
	}()
	t.Cleanup(func() {
		for _, ln := range c.tcp {
			ln.Close()
		}
		c.udp.Close()
		c.mu.Lock()
		for _, h := range c.held {
			h.Close()
		}
		c.mu.Unlock()
	})
	return c
}

// expectNoDials waits for late dials, then fails the test if gchd
// connected to the canary or holds more descriptors than before the tries.
func (c *canary) expectNoDials(t *testing.T, tries, before int) {
	t.Helper()
	time.Sleep(time.Second)
	after := openFDs(t)
	t.Logf("connections to the canary: %d of %d; descriptors %d before, %d after", c.conns.Load(), tries, before, after)
	if n := c.conns.Load(); n != 0 {
		t.Errorf("gchd connected %d times to the address %d requests named in their Via", n, tries)
	}
	if after > before+5 {
		t.Errorf("descriptors went from %d to %d after %d hung-up requests", before, after, tries)
	}
}

func (c *canary) tcpPort(i int) int { return c.tcp[i%len(c.tcp)].Addr().(*net.TCPAddr).Port }
func (c *canary) udpPort() int      { return c.udp.LocalAddr().(*net.UDPAddr).Port }

// openFDs counts this process's descriptors: the test and gchd share it.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// A request over TCP whose Via names another host (or carries received=
// and rport= naming it), from a client that hangs up at once, made sipgo
// dial that host and write gchd's answer there: a port scanner for
// anyone, and a descriptor per target. gchd opens no connections: the
// answer goes on the request's connection or is dropped.
func TestAnswerNeverDialsTheVia(t *testing.T) {
	const tries = 30
	s := startSIP(t)
	can := newCanary(t, tries)
	before := openFDs(t)
	for i := range tries {
		via := fmt.Sprintf("127.0.0.2:%d", can.tcpPort(i))
		if i%2 == 1 {
			// A received= and rport= of the client's choosing.
			via = fmt.Sprintf("127.0.0.1:5999;received=127.0.0.2;rport=%d", can.tcpPort(i))
		}
		c, err := net.Dial("tcp", s.app.SIPAddr("TCP"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-scan%d\r\n"+
			"From: <sip:scan@%s>;tag=s%d\r\nTo: <sip:%s>\r\nCall-ID: scan-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"+
			"Content-Length: 0\r\n\r\n", testDomain, via, i, testDomain, i, testDomain, i)
		c.Close()
	}
	can.expectNoDials(t, tries, before)
}

// A forged response (a 200 to an INVITE with a top Via carrying gchd's
// branch prefix and a second Via naming a victim) was relayed to the
// victim along the Via path: any address gchd ever heard from (a
// registered phone, here one keep-alive from the victim's socket). Only a
// branch gchd signed is relayed, and only to the flow it signs.
func TestForgedStrayResponseGoesNowhere(t *testing.T) {
	s := startSIP(t)
	can := newCanary(t, 1)
	if _, err := can.udp.WriteTo([]byte("\r\n\r\n"), udpAddr(t, s.app.SIPAddr("UDP"))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	c := s.dial("UDP")
	for i := range 20 {
		fmt.Fprintf(c, "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-gcx%d-abcdef\r\n"+
			"Via: SIP/2.0/UDP 127.0.0.2:%d;branch=z9hG4bKvictim%d;rport=%d;received=127.0.0.2\r\n"+
			"From: <sip:a@%s>;tag=a\r\nTo: <sip:b@%s>;tag=b\r\nCall-ID: forged-%d\r\nCSeq: 1 INVITE\r\n"+
			"Content-Length: 0\r\n\r\n", s.app.SIPAddr("UDP"), i, can.udpPort(), i, can.udpPort(), testDomain, testDomain, i)
	}
	time.Sleep(time.Second)
	if n := can.grams.Load(); n != 0 {
		t.Fatalf("%d forged responses were relayed to the victim", n)
	}
}

// The legitimate case relayStray exists for: the callee's 2xx to a
// relayed INVITE, sent again, reaches the caller, over the flow the
// branch signs.
func TestInviteRetransmitted2xxReachesCaller(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	s.addAccount("bob", "pw-bob", "")
	okSent := make(chan *sip.Response, 1)
	b := newPhone(t, s, "bob", "UDP", withHandlers(func(b *phone) {
		b.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			res := sip.NewResponseFromRequest(req, 200, "OK", nil)
			tx.Respond(res)
			okSent <- res
		})
		b.srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	}))
	b.register()

	caller := s.dial("UDP")
	local := caller.LocalAddr().String()
	fmt.Fprintf(caller, "INVITE sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-call1;rport\r\n"+
		"From: <sip:alice@%s>;tag=al\r\nTo: <sip:bob@%s>\r\nCall-ID: retx-call\r\nCSeq: 1 INVITE\r\n"+
		"Contact: <sip:alice@%s>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", testDomain, local, testDomain, testDomain, local)
	read200 := func(what string) {
		t.Helper()
		buf := make([]byte, 8192)
		deadline := time.Now().Add(5 * time.Second)
		for {
			caller.SetReadDeadline(deadline)
			n, err := caller.Read(buf)
			if err != nil {
				t.Fatalf("%s: caller got no 200: %v", what, err)
			}
			if strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
				return
			}
		}
	}
	read200("first answer")
	var res *sip.Response
	select {
	case res = <-okSent:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never answered")
	}
	// The 200 again, as bob's phone retransmits it until the ACK; and one
	// whose transaction gchd no longer knows (its unsigned random part
	// changed), which only relayStray can relay.
	again := res.Clone()
	again.SetDestination(s.app.SIPAddr("UDP"))
	b.sip.Conn.WriteTo([]byte(again.String()), udpAddr(t, s.app.SIPAddr("UDP")))
	read200("retransmitted 200")
	stray := res.Clone()
	via := stray.Via()
	branch, _ := via.Params.Get("branch")
	key, tok, _ := strings.Cut(branch, ".")
	via.Params.Add("branch", key[:len(key)-1]+"Z."+tok)
	b.sip.Conn.WriteTo([]byte(stray.String()), udpAddr(t, s.app.SIPAddr("UDP")))
	read200("stray 200 after the transaction")
}

func udpAddr(t *testing.T, addr string) *net.UDPAddr {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A relayed MESSAGE or INVITE carried the caller's Proxy-Authorization
// (the callee cracked the password offline) and any P-Asserted-Identity,
// Remote-Party-ID, P-Preferred-Identity or X-GC-* header the caller wrote
// (caller-ID spoofing, a fake group message). They are removed; the
// callee sees gchd's P-Asserted-Identity of the authenticated caller.
func TestRelayCarriesNoCredentialsOrForgedIdentity(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	invites := make(chan *sip.Request, 1)
	b := newPhone(t, s, "bob", "UDP", withHandlers(func(b *phone) {
		b.srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
			invites <- req
			tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
		})
	}))
	b.register()
	a := newPhone(t, s, "alice", "UDP")
	forged := []sip.Header{
		sip.NewHeader("P-Asserted-Identity", "<sip:boss@"+testDomain+">"),
		sip.NewHeader("Remote-Party-ID", "<sip:boss@"+testDomain+">;party=calling"),
		sip.NewHeader("P-Preferred-Identity", "<sip:boss@"+testDomain+">"),
		sip.NewHeader("X-GC-From", "boss"),
		sip.NewHeader("x-gc-gid", "1"),
	}
	if res := a.message("bob", "hello", forged...); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	check := func(what string, req *sip.Request) {
		t.Helper()
		for _, h := range req.Headers() {
			switch strings.ToLower(h.Name()) {
			case "authorization", "proxy-authorization":
				t.Errorf("%s reached the callee with the caller's %s: %s", what, h.Name(), h.Value())
			case "remote-party-id", "p-preferred-identity", "x-gc-from", "x-gc-gid":
				t.Errorf("%s reached the callee with a forged %s: %s", what, h.Name(), h.Value())
			case "p-asserted-identity":
				if want := "<sip:alice@" + testDomain + ">"; h.Value() != want {
					t.Errorf("%s: P-Asserted-Identity %q, want %q", what, h.Value(), want)
				}
			}
		}
		if pai := req.GetHeaders("P-Asserted-Identity"); len(pai) != 1 {
			t.Errorf("%s: %d P-Asserted-Identity headers, want gchd's one", what, len(pai))
		}
	}
	check("MESSAGE", b.waitFor(1)[0])

	inv := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: testDomain})
	inv.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	inv.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: testDomain}})
	inv.AppendHeader(&sip.ContactHeader{Address: a.contact})
	for _, h := range forged {
		inv.AppendHeader(sip.HeaderClone(h))
	}
	if res := a.send(inv); res.StatusCode != 486 {
		t.Fatalf("INVITE: %s", res.StartLine())
	}
	select {
	case req := <-invites:
		check("INVITE", req)
	case <-time.After(5 * time.Second):
		t.Fatal("bob never got the INVITE")
	}
}

// sipgo ends header lines only at CR LF: a bare LF inside a value passed
// to the callee byte for byte, where a parser that ends lines at LF reads
// a header the sender made up. Such a request is refused with 400 and
// nothing is relayed.
func TestBareLFInHeaderRefused(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	s.addAccount("bob", "pw-bob", "")
	b := newPhone(t, s, "bob", "UDP")
	b.register()
	for i, smuggled := range []string{
		"Subject: hi\nP-Asserted-Identity: <sip:boss@" + testDomain + ">",
		"From: \"a\nP-Asserted-Identity: boss\" <sip:mallory@" + testDomain + ">;tag=f",
	} {
		c := s.dial("UDP")
		local := c.LocalAddr().String()
		from := "From: <sip:mallory@" + testDomain + ">;tag=f\r\n"
		if strings.HasPrefix(smuggled, "From:") {
			from = ""
		}
		msg := fmt.Sprintf("MESSAGE sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-lf%d\r\n%s"+
			"To: <sip:bob@%s>\r\nCall-ID: lf-%d\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\n%s\r\n"+
			"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi", testDomain, local, i, from, testDomain, i, smuggled)
		if got := udpExchange(t, c, msg); !strings.HasPrefix(string(got), "SIP/2.0 400") {
			t.Errorf("%q: answered %q, want 400", smuggled, strings.SplitN(string(got), "\r\n", 2)[0])
		}
	}
	// A bare CR sipgo's parser refuses ("line has no CRLF"): dropped
	// unanswered, as any datagram it cannot parse.
	c := s.dial("UDP")
	fmt.Fprintf(c, "MESSAGE sip:bob@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-cr\r\nFrom: <sip:mallory@%s>;tag=f\r\n"+
		"To: <sip:bob@%s>\r\nCall-ID: cr-1\r\nCSeq: 1 MESSAGE\r\nSubject: hi\rP-Asserted-Identity: <sip:boss@%s>\r\n"+
		"Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi", testDomain, c.LocalAddr(), testDomain, testDomain, testDomain)
	time.Sleep(300 * time.Millisecond)
	if got := b.received(); len(got) != 0 {
		t.Fatalf("bob received %d requests with a bare CR or LF in a header", len(got))
	}
}

// sipgo's UDP read loop entered every source address in its connection
// pool (and a set of its own) and never forgot one: about 1 MB per 15,000
// source ports. gchd recycles the loop, so the pool stays bounded, and
// every request is still answered from the listening socket (no socket
// opened to answer one whose source the pool forgot).
func TestUDPSourcesForgotten(t *testing.T) {
	s := startEngine(t, "sqlite")
	const sources, workers = 20_000, 8
	fds0 := openFDs(t)
	var heap0 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap0)
	var answered, unanswered atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for i := w; i < sources; i += workers {
				c, err := net.Dial("udp", s.app.SIPAddr("UDP"))
				if err != nil {
					t.Error(err)
					return
				}
				fmt.Fprintf(c, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-src%d;rport\r\n"+
					"From: <sip:probe@%s>;tag=p\r\nTo: <sip:%s>\r\nCall-ID: src-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"+
					"Content-Length: 0\r\n\r\n", testDomain, c.LocalAddr(), i, testDomain, testDomain, i)
				c.SetReadDeadline(time.Now().Add(2 * time.Second))
				if n, err := c.Read(buf); err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 200") {
					answered.Add(1)
				} else {
					unanswered.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond)
	pool := s.app.sip.UDPPoolSize()
	var heap1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&heap1)
	fds1 := openFDs(t)
	t.Logf("%d sources: %d answered, %d not; sipgo's UDP pool holds %d addresses; heap in use %.1f -> %.1f MiB; descriptors %d -> %d",
		sources, answered.Load(), unanswered.Load(), pool, float64(heap0.HeapInuse)/(1<<20), float64(heap1.HeapInuse)/(1<<20), fds0, fds1)
	if pool > 12_000 {
		t.Errorf("sipgo's UDP pool holds %d addresses after %d sources", pool, sources)
	}
	if unanswered.Load() > sources/100 {
		t.Errorf("%d of %d OPTIONS unanswered", unanswered.Load(), sources)
	}
	if fds1 > fds0+5 {
		t.Errorf("descriptors went from %d to %d: sockets were opened to answer", fds0, fds1)
	}
}

// The same over WebSocket and secure WebSocket: a client that upgrades,
// sends one request naming another host in its Via and hangs up gets no
// connection opened on its behalf.
func TestAnswerNeverDialsTheViaOverWebSocket(t *testing.T) {
	const tries = 20
	for _, transport := range []string{"WS", "WSS"} {
		t.Run(transport, func(t *testing.T) {
			s := startSIP(t)
			can := newCanary(t, tries)
			before := openFDs(t)
			scheme := "ws"
			dialer := ws.Dialer{Protocols: []string{"sip"}}
			if transport == "WSS" {
				scheme = "wss"
				dialer.TLSConfig = &tls.Config{InsecureSkipVerify: true}
			}
			for i := range tries {
				c, _, _, err := dialer.Dial(context.Background(), scheme+"://"+s.app.SIPAddr(transport))
				if err != nil {
					t.Fatal(err)
				}
				msg := fmt.Sprintf("OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/%s 127.0.0.2:%d;branch=z9hG4bK-wscan%d\r\n"+
					"From: <sip:scan@%s>;tag=s%d\r\nTo: <sip:%s>\r\nCall-ID: wscan-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"+
					"Content-Length: 0\r\n\r\n", testDomain, transport, can.tcpPort(i), i, testDomain, i, testDomain, i)
				if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
					t.Fatal(err)
				}
				c.Close()
			}
			can.expectNoDials(t, tries, before)
		})
	}
}
