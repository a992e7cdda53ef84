package app

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	gosip "github.com/ghettovoice/gosip"
	glog "github.com/ghettovoice/gosip/log"
	gsip "github.com/ghettovoice/gosip/sip"
)

// gosipPhone is a user agent built on a second, independent SIP stack, so
// that gchd is not judged only by the parser it is built on.
type gosipPhone struct {
	srv   gosip.Server
	login string
	port  int
	net   string
	got   chan string
}

func newGosipPhone(t *testing.T, login, network string) *gosipPhone {
	t.Helper()
	logger := glog.NewDefaultLogrusLogger()
	logger.SetLevel(2) // errors only
	srv := gosip.NewServer(gosip.ServerConfig{Host: "127.0.0.1", UserAgent: "gosip-" + login}, nil, nil, logger)
	t.Cleanup(srv.Shutdown)
	var port int
	if network == "udp" {
		c, _ := net.ListenPacket("udp4", "127.0.0.1:0")
		port = c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
	} else {
		l, _ := net.Listen("tcp4", "127.0.0.1:0")
		port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	// gosip sends UDP only from a listening socket.
	if err := srv.Listen(network, fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
		t.Fatal(err)
	}
	p := &gosipPhone{srv: srv, login: login, port: port, net: network, got: make(chan string, 10)}
	srv.OnRequest(gsip.MESSAGE, func(req gsip.Request, tx gsip.ServerTransaction) {
		srv.Respond(gsip.NewResponseFromRequest("", req, 200, "OK", ""))
		p.got <- req.Body()
	})
	return p
}

func (p *gosipPhone) request(t *testing.T, method gsip.RequestMethod, server string, to string, body string) gsip.Response {
	t.Helper()
	host, portStr, _ := net.SplitHostPort(server)
	var sport int
	fmt.Sscan(portStr, &sport)
	rport, lport := gsip.Port(sport), gsip.Port(p.port)
	aor := &gsip.SipUri{FUser: gsip.String{Str: p.login}, FHost: testDomain}
	target := &gsip.SipUri{FHost: testDomain}
	if to != "" {
		target = &gsip.SipUri{FUser: gsip.String{Str: to}, FHost: testDomain}
	}
	b := gsip.NewRequestBuilder().
		SetMethod(method).
		SetTransport(p.net).
		SetHost("127.0.0.1").
		SetRecipient(target).
		AddVia(&gsip.ViaHop{Port: &lport, Params: gsip.NewParams().Add("branch", gsip.String{Str: gsip.GenerateBranch()})}).
		SetFrom(&gsip.Address{Uri: aor, Params: gsip.NewParams().Add("tag", gsip.String{Str: fmt.Sprint(time.Now().UnixNano())})}).
		SetTo(&gsip.Address{Uri: target})
	if method == gsip.REGISTER {
		b.SetTo(&gsip.Address{Uri: aor}).SetContact(&gsip.Address{Uri: &gsip.SipUri{FUser: gsip.String{Str: p.login},
			FHost: "127.0.0.1", FPort: &lport, FUriParams: gsip.NewParams().Add("transport", gsip.String{Str: p.net})}})
	}
	if body != "" {
		ct := gsip.ContentType("text/plain")
		b.SetContentType(&ct).SetBody(body)
	}
	req, err := b.Build()
	if err != nil {
		t.Fatal(err)
	}
	// Address gchd explicitly: the Request-URI names the domain.
	req.SetDestination(fmt.Sprintf("%s:%d", host, rport))
	if method == gsip.REGISTER {
		exp := gsip.Expires(300)
		req.AppendHeader(&exp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := p.srv.RequestWithContext(ctx, req, gosip.WithAuthorizer(&gsip.DefaultAuthorizer{
		User: gsip.String{Str: p.login}, Password: gsip.String{Str: "pw-" + p.login}}))
	if err != nil {
		t.Fatalf("%s from gosip over %s: %v", method, p.net, err)
	}
	return res
}

// TestGosipPhones runs gosip phones over UDP. Over TCP this version of
// gosip registers its client transaction after writing the request: a
// response that arrives within the millisecond is lost, and gosip then
// retransmits over TCP (which RFC 3261 forbids), a replay gchd refuses.
// The sipgo phones cover TCP.
func TestGosipPhones(t *testing.T) {
	s := startSIP(t)
	for _, network := range []string{"udp"} {
		t.Run(network, func(t *testing.T) {
			a, b := "ga"+network, "gb"+network
			s.addAccount(a, "pw-"+a, "")
			s.addAccount(b, "pw-"+b, "")
			pa, pb := newGosipPhone(t, a, network), newGosipPhone(t, b, network)
			server := s.app.SIPAddr("UDP")
			for _, p := range []*gosipPhone{pa, pb} {
				if res := p.request(t, gsip.REGISTER, server, "", ""); res.StatusCode() != 200 {
					t.Fatalf("REGISTER %s: %s", p.login, res.StartLine())
				}
			}
			if res := pa.request(t, gsip.MESSAGE, server, b, "from a second stack"); res.StatusCode() != 200 {
				t.Fatalf("MESSAGE: %s", res.StartLine())
			}
			select {
			case body := <-pb.got:
				if body != "from a second stack" {
					t.Fatalf("received %q", body)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the gosip phone received nothing")
			}
		})
	}
}
