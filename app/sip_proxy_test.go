package app

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
	"gchd/storage"
)

// A MESSAGE to a user with two devices reaches both (parallel forking) and
// the sender gets one 200.
func TestMessageForksToEveryDevice(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	desk, mobile := newPhone(t, s, "bob", "UDP"), newPhone(t, s, "bob", "WS")
	desk.register()
	mobile.register()
	a := newPhone(t, s, "alice", "TCP")
	if res := a.message("bob", "to both"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	for _, p := range []*phone{desk, mobile} {
		if got := bodies(p.waitFor(1)); got[0] != "to both" {
			t.Fatalf("%s received %v", p.transport, got)
		}
	}
	// When one device refuses and the other accepts, the sender still
	// learns of the success.
	desk.mu.Lock()
	desk.answer = 488
	desk.mu.Unlock()
	if res := a.message("bob", "again"); res.StatusCode != 200 {
		t.Fatalf("one device refusing: %s", res.StartLine())
	}
}

func TestProxyAnswers(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "" })
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	a := newPhone(t, s, "alice", "UDP")
	a.register()

	if res := a.message("nobody", "x"); res.StatusCode != 404 {
		t.Errorf("unknown user: %s", res.StartLine())
	}
	// bob is registered nowhere: a MESSAGE is stored for him (202), an
	// OPTIONS finds nobody (480).
	if res := a.message("bob", "x"); res.StatusCode != 202 {
		t.Errorf("MESSAGE to a user registered nowhere: %s", res.StartLine())
	}
	opt := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", User: "bob", Host: testDomain})
	opt.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}, Params: sip.HeaderParams{{K: "tag", V: "o"}}})
	if res := a.send(opt); res.StatusCode != 480 {
		t.Errorf("OPTIONS to a user registered nowhere: %s", res.StartLine())
	}
	// Max-Forwards: 0.
	req := a.messageRequest("bob", "x")
	mf := sip.MaxForwardsHeader(0)
	req.AppendHeader(&mf)
	if res := a.send(req); res.StatusCode != 483 {
		t.Errorf("Max-Forwards 0: %s", res.StartLine())
	}
	// Another domain: not an open relay.
	req = a.messageRequest("bob", "x")
	req.Recipient.Host = "example.com"
	if res := a.send(req); res.StatusCode != 403 {
		t.Errorf("other domain: %s", res.StartLine())
	}
	// Without credentials: 407 with a Proxy-Authenticate challenge.
	req = a.messageRequest("bob", "x")
	a.prepare(req)
	res, err := a.cli.Do(t.Context(), req)
	if err != nil || res.StatusCode != 407 || res.GetHeader("Proxy-Authenticate") == nil {
		t.Errorf("no credentials: %v %v", res, err)
	}
	// A From that is not the authenticated user: 403.
	req = a.messageRequest("bob", "x")
	req.ReplaceHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: testDomain}, Params: sip.HeaderParams{{K: "tag", V: "x"}}})
	if res := a.send(req); res.StatusCode != 403 {
		t.Errorf("spoofed From: %s", res.StartLine())
	}
	// OPTIONS to the server is answered without credentials.
	opt = sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: testDomain})
	a.prepare(opt)
	if res, err := a.cli.Do(t.Context(), opt); err != nil || res.StatusCode != 200 || res.GetHeader("Allow") == nil {
		t.Errorf("OPTIONS: %v %v", res, err)
	}
}

// A trusted network relays without a challenge (an SBC in front of gchd).
func TestTrustedSource(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	s.addAccount("bob", "pw-bob", "")
	b := newPhone(t, s, "bob", "UDP")
	b.register()
	sbc := newPhone(t, s, "sbc", "UDP")
	req := sbc.messageRequest("bob", "from the trusted network")
	sbc.prepare(req)
	res, err := sbc.cli.Do(t.Context(), req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("trusted MESSAGE: %v %v", res, err)
	}
	b.waitFor(1)
}

// A phone behind NAT: its Contact names a private address nobody can
// reach, yet requests arrive because they go to where its REGISTER came
// from.
func TestNATedPhoneIsReachable(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	b := newPhone(t, s, "bob", "UDP", withContact("10.255.255.1", 5999))
	b.register()
	a := newPhone(t, s, "alice", "UDP")
	if res := a.message("bob", "through the NAT"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	if got := bodies(b.waitFor(1)); got[0] != "through the NAT" {
		t.Fatalf("received %v", got)
	}
}

// When a phone's connection closes, its binding is unreachable at once: a
// MESSAGE for it is stored (202) and delivered when the phone registers
// again over a new connection, like Kamailio's msilo.
func TestClosedFlowStoresAndForwards(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		s.addAccount("alice", "pw-alice", "")
		s.addAccount("bob", "pw-bob", "")
		b := newPhone(t, s, "bob", "TCP")
		b.register()
		b.ua.Close()
		a := newPhone(t, s, "alice", "UDP")
		time.Sleep(100 * time.Millisecond) // the close reaches gchd
		res := a.message("bob", "anyone there?")
		if res.StatusCode != 202 || res.GetHeader("X-GC-MID") == nil {
			t.Fatalf("after the flow closed: %s, want 202 with X-GC-MID", res.StartLine())
		}
		b2 := newPhone(t, s, "bob", "TCP")
		b2.register()
		got := b2.waitFor(1)
		if string(got[0].Body()) != "anyone there?" || got[0].From().Address.User != "alice" || got[0].GetHeader("Date") == nil {
			t.Fatalf("stored message arrived as %q from %s", got[0].Body(), got[0].From().Address.User)
		}
	})
}

// CRLF keep-alives on a connection are answered with CRLF (RFC 5626 3.5.1).
func TestKeepAlive(t *testing.T) {
	s := startSIP(t)
	c := s.dial("TCP")
	c.Write([]byte("\r\n\r\n"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "\r\n" {
		t.Fatalf("pong = %q, %v", buf, err)
	}
}

// Two registered phones call each other through gchd: INVITE with
// authentication, ringing, answer, ACK and BYE along the Record-Route; and a
// call cancelled while ringing.
func TestCall(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	var callee *sipua.Callee
	b := newPhone(t, s, "bob", "TCP", withHandlers(func(b *phone) { callee = sipua.AnswerCalls(b.sip, b.contact) }))
	b.register()

	a := newPhone(t, s, "alice", "UDP")
	a.register()
	adlg := &sipgo.DialogUA{Client: a.cli, ContactHDR: sip.ContactHeader{Address: a.contact}}
	invite := func(body string) (*sipgo.DialogClientSession, error) {
		req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: testDomain})
		req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(body))
		a.prepare(req)
		return adlg.WriteInvite(t.Context(), req)
	}
	d, err := invite("v=0\r\n")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: "alice", Password: "pw-alice"}); err != nil {
		t.Fatalf("call not answered: %v", err)
	}
	if rr := d.InviteResponse.GetHeaders("Record-Route"); len(rr) != 2 {
		t.Fatalf("Record-Route = %v, want both of gchd's entries", rr)
	}
	if err := d.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-callee.Acked:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never got the ACK")
	}
	if err := d.Bye(ctx); err != nil {
		t.Fatalf("BYE through gchd: %v", err)
	}
	select {
	case <-callee.Byes:
	case <-time.After(5 * time.Second):
		t.Fatal("bob never got the BYE")
	}
	if !callee.Answered() {
		t.Fatal("bob's phone did not answer")
	}
	select {
	case err := <-callee.Errs:
		t.Fatalf("bob's phone: %v", err)
	default:
	}

	// Cancelled while ringing: alice hangs up before bob answers.
	d2, err := invite("v=0\r\nring only\r\n")
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel2()
	waitErr := make(chan error, 1)
	go func() { waitErr <- d2.WaitAnswer(ctx2, sipgo.AnswerOptions{Username: "alice", Password: "pw-alice"}) }()
	time.Sleep(500 * time.Millisecond)
	cancel2()
	if err := <-waitErr; err == nil {
		t.Fatal("a cancelled call was answered")
	}
}

// A peer that sends a request back to gchd unchanged (a misrouting proxy)
// makes it go round: gchd recognises its own Via on the returning request
// and answers 482 instead of relaying forever.
func TestLoopDetection(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	b := newPhone(t, s, "bob", "UDP")
	b.register()
	// Replace bob's phone by a socket on the same port that bounces every
	// request back to gchd with its own Via added, as a proxy would.
	addr := b.sip.Conn.LocalAddr().String()
	b.ua.Close()
	b.sip.Conn.Close()
	bounce, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer bounce.Close()
	gchd, _ := net.ResolveUDPAddr("udp", s.app.SIPAddr("UDP"))
	loops := make(chan string, 10)
	go func() {
		buf := make([]byte, 65535)
		for n := 0; ; n++ {
			k, from, err := bounce.ReadFrom(buf)
			if err != nil {
				return
			}
			msg := string(buf[:k])
			if strings.HasPrefix(msg, "SIP/2.0 ") {
				loops <- strings.SplitN(msg, "\r\n", 2)[0]
				continue
			}
			line, rest, _ := strings.Cut(msg, "\r\n")
			via := "Via: SIP/2.0/UDP " + addr + ";branch=z9hG4bK-bounce" + time.Now().Format("150405.000000000") + "\r\n"
			bounce.WriteTo([]byte(line+"\r\n"+via+rest), gchd)
			_ = from
		}
	}()
	a := newPhone(t, s, "alice", "UDP")
	go a.sendErr(a.messageRequest("bob", "round and round"))
	select {
	case got := <-loops:
		if got != "SIP/2.0 482 Loop Detected" {
			t.Fatalf("the bounced request got %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no 482: the loop was not detected")
	}
}

// A UDP phone that is not behind a NAT (its Via names where it sends from)
// is reached at its Contact, even when that is another port: the phone
// that sends from an ephemeral port and listens on another, or SIPp's
// separate client and server sockets.
func TestContactUsedWithoutNAT(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	listener := newPhone(t, s, "bob", "UDP")
	registrar := newPhone(t, s, "bob", "UDP", withContact("127.0.0.1", listener.contact.Port))
	registrar.register()
	a := newPhone(t, s, "alice", "UDP")
	if res := a.message("bob", "to the contact"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	if got := bodies(listener.waitFor(1)); got[0] != "to the contact" {
		t.Fatalf("listener got %v", got)
	}
	if got := registrar.received(); len(got) != 0 {
		t.Fatalf("the registering socket got %d requests", len(got))
	}
}

// A made-up To tag does not make a request "in a dialog" that skips
// authentication, and gchd follows no Route to another host: it is not an
// open relay.
func TestNoOpenRelayInDialog(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	b := newPhone(t, s, "bob", "UDP")
	b.register()
	a := newPhone(t, s, "alice", "UDP")
	forged := func() *sip.Request {
		req := a.messageRequest("bob", "spam")
		req.ReplaceHeader(&sip.ToHeader{Address: req.Recipient, Params: sip.HeaderParams{{K: "tag", V: "made-up"}}})
		return req
	}
	// Unauthenticated: challenged, not relayed.
	req := forged()
	req.AppendHeader(sip.NewHeader("Route", "<sip:203.0.113.9:5060;lr>"))
	a.prepare(req)
	res, err := a.cli.Do(t.Context(), req)
	if err != nil || res.StatusCode != 407 {
		t.Fatalf("forged in-dialog request with a foreign Route: %v %v", res, err)
	}
	// Authenticated: still no relaying to another host.
	req = forged()
	req.AppendHeader(sip.NewHeader("Route", "<sip:203.0.113.9:5060;lr>"))
	if res := a.send(req); res.StatusCode != 403 {
		t.Fatalf("authenticated, foreign Route: %s", res.StartLine())
	}
	// A Route naming gchd with a flow token of another dialog is no key.
	req = forged()
	host, port, _ := net.SplitHostPort(s.app.SIPAddr("UDP"))
	req.AppendHeader(sip.NewHeader("Route", "<sip:"+host+":"+port+";lr;gchd-flow=VURQfDEyNy4wLjAuMTo1MDYwAAAAAAAAAAAAAAAA>"))
	a.prepare(req)
	if res, err := a.cli.Do(t.Context(), req); err != nil || res.StatusCode != 407 {
		t.Fatalf("forged flow token: %v %v", res, err)
	}
	if got := b.received(); len(got) != 0 {
		t.Fatalf("bob received %d forged requests", len(got))
	}
}
