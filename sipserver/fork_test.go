package sipserver

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"

	"gchd/metrics"
	"gchd/registrar"
)

// noChat is a chat engine the fork tests never reach: a call would panic.
type noChat struct{ Chat }

// uas is a tiny phone on loopback UDP that answers every MESSAGE with
// code, and every INVITE with 180 and then code (0: rings until CANCEL).
type uas struct {
	addr string
	mu   sync.Mutex
	got  []*sip.Request // MESSAGE, INVITE and CANCEL requests received
}

func (u *uas) received() []*sip.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]*sip.Request(nil), u.got...)
}

func startUAS(t *testing.T, code int) *uas {
	t.Helper()
	configureStack() // sipgo's globals, before its first user agent
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uas"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &uas{addr: conn.LocalAddr().String()}
	record := func(req *sip.Request) {
		u.mu.Lock()
		u.got = append(u.got, req)
		u.mu.Unlock()
	}
	srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		tx.Respond(sip.NewResponseFromRequest(req, code, "Test", nil))
	})
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		record(req)
		tx.Respond(sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		if code != 0 {
			res := sip.NewResponseFromRequest(req, code, "Test", nil)
			res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1"}})
			tx.Respond(res)
			return
		}
		tx.OnCancel(record) // sipgo answers the INVITE 487 itself
		<-tx.Done()
	})
	go srv.ServeUDP(conn)
	t.Cleanup(func() { conn.Close(); ua.Close() })
	return u
}

// startProxy serves a Server on loopback UDP whose user bob has a device
// at each of phones; 127.0.0.0/8 is trusted, so requests need no digest.
func startProxy(t *testing.T, phones ...*uas) *Server {
	t.Helper()
	reg := &bindingTable{bindings: map[string][]registrar.Binding{}}
	for _, p := range phones {
		reg.bindings["bob"] = append(reg.bindings["bob"], registrar.Binding{AOR: "bob", URI: "sip:bob@" + p.addr,
			Transport: "UDP", Source: p.addr, CallID: p.addr})
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	m := metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})
	st, err := Listen(Options{Domain: "test.local", Addr: "127.0.0.1:0", InviteTimeout: 5 * time.Second,
		Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, reg, m, log)
	if err != nil {
		t.Fatal(err)
	}
	sender := NewSender(st)
	s, err := New(st, Config{Accounts: accountsOf{"bob": newAccount("bob", "test.local", "x")}, Chat: noChat{}, Sender: sender})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { defer close(served); s.Serve(ctx) }()
	t.Cleanup(func() {
		stop()
		<-served
		s.Close()
		sender.Close()
		st.Close()
	})
	return s
}

// call sends method to bob through the proxy and returns the final answer.
func call(t *testing.T, s *Server, method sip.RequestMethod) *sip.Response {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uac"))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(method, sip.Uri{Scheme: "sip", User: "bob", Host: "test.local"})
	from := sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "test.local"}, Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(8))
	req.AppendHeader(&from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "bob", Host: "test.local"}})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "127.0.0.1"}})
	if method == sip.MESSAGE {
		req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
		req.SetBody([]byte("hello"))
	}
	req.SetTransport("UDP")
	req.SetDestination(s.Addr("UDP"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cli.Do(ctx, req)
	if err != nil {
		t.Fatalf("%s through the proxy: %v", method, err)
	}
	return res
}

func TestForkFirstSuccessWins(t *testing.T) {
	busy, ok := startUAS(t, 486), startUAS(t, 200)
	s := startProxy(t, busy, ok)
	if res := call(t, s, sip.MESSAGE); res.StatusCode != 200 {
		t.Fatalf("answer %d, want the 200 of the device that took it", res.StatusCode)
	}
	for i, p := range []*uas{busy, ok} {
		got := p.received()
		if len(got) != 1 {
			t.Fatalf("device %d got %d requests, want 1", i, len(got))
		}
		req := got[0]
		if mf := req.MaxForwards(); mf == nil || mf.Val() != 69 {
			t.Errorf("device %d: Max-Forwards %v, want 69", i, mf)
		}
		if b, _ := req.Via().Params.Get("branch"); len(b) < len(branchMagic) || b[:len(branchMagic)] != branchMagic {
			t.Errorf("device %d: top Via branch %q is not ours", i, b)
		}
		if req.Recipient.String() != "sip:bob@"+p.addr {
			t.Errorf("device %d: Request-URI %s, want its contact", i, req.Recipient.String())
		}
	}
}

func TestForkBestFailure(t *testing.T) {
	for _, c := range []struct{ a, b, want int }{
		{486, 603, 603}, // a 6xx wins
		{302, 603, 603},
		{486, 302, 302}, // else the lowest class
		{302, 486, 302},
	} {
		s := startProxy(t, startUAS(t, c.a), startUAS(t, c.b))
		if res := call(t, s, sip.MESSAGE); res.StatusCode != c.want {
			t.Errorf("branches %d and %d: answer %d, want %d", c.a, c.b, res.StatusCode, c.want)
		}
	}
}

func TestForkCancelsRingingBranches(t *testing.T) {
	ringing, answering := startUAS(t, 0), startUAS(t, 200)
	s := startProxy(t, ringing, answering)
	if res := call(t, s, sip.INVITE); res.StatusCode != 200 {
		t.Fatalf("INVITE answer %d, want 200", res.StatusCode)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var methods []string
		for _, r := range ringing.received() {
			methods = append(methods, string(r.Method))
		}
		if len(methods) == 2 && methods[1] == "CANCEL" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the ringing device got %v, want INVITE then CANCEL", methods)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if inv, c := ringing.received()[0], ringing.received()[1]; c.CSeq().SeqNo != inv.CSeq().SeqNo ||
		c.Via().Params.GetOr("branch", "") != inv.Via().Params.GetOr("branch", "") {
		t.Errorf("CANCEL CSeq %d branch %s, want the INVITE's %d %s (RFC 3261 9.1)", c.CSeq().SeqNo,
			c.Via().Params.GetOr("branch", ""), inv.CSeq().SeqNo, inv.Via().Params.GetOr("branch", ""))
	}
}

func TestForkCloseStopsBranches(t *testing.T) {
	ringing := startUAS(t, 0)
	s := startProxy(t, ringing)
	answered := make(chan int, 1)
	go func() {
		defer func() { recover() }() // t.Fatalf from a goroutine: the answer is what counts
		answered <- call(t, s, sip.INVITE).StatusCode
	}()
	deadline := time.Now().Add(5 * time.Second)
	for len(ringing.received()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the INVITE never reached the device")
		}
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while a branch rang: its watcher has no owner")
	}
}
