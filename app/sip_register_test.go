package app

import (
	"fmt"
	"gchd/internal/testkit"
	"gchd/storage"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
)

var transports = []string{"UDP", "TCP", "TLS", "WS", "WSS"}

// Over every transport a phone registers with digest auth and two phones
// exchange a MESSAGE through gchd.
func TestTransports(t *testing.T) {
	s := startSIP(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			a, b := "a"+strings.ToLower(tr), "b"+strings.ToLower(tr)
			s.addAccount(a, "pw-"+a, "")
			s.addAccount(b, "pw-"+b, "")
			pa, pb := newPhone(t, s, a, tr), newPhone(t, s, b, tr)
			pa.register()
			pb.register()
			res := pa.message(b, "hello over "+tr)
			if res.StatusCode != 200 {
				t.Fatalf("MESSAGE: %s", res.StartLine())
			}
			got := pb.waitFor(1)
			if string(got[0].Body()) != "hello over "+tr || got[0].From().Address.User != a {
				t.Fatalf("received %q from %s", got[0].Body(), got[0].From().Address.User)
			}
			if got[0].Transport() != tr {
				t.Fatalf("arrived over %s", got[0].Transport())
			}
		})
	}
}

// The default challenge is MD5 alone, which every phone answers.
func TestRegisterDefaultChallengeMD5(t *testing.T) {
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "")
	p := newPhone(t, s, "alice", "UDP")
	req := p.registerRequest(300)
	p.prepare(req)
	res, err := p.cli.Do(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	chals := res.GetHeaders("WWW-Authenticate")
	if res.StatusCode != 401 || len(chals) != 1 || !strings.Contains(chals[0].Value(), "algorithm=MD5") {
		t.Fatalf("challenge: %s %v", res.StartLine(), chals)
	}
	p.register()
}

func TestRegisterChallenges(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.DigestAlgorithms = "MD5,SHA-256" })
	s.addAccount("alice", "pw-alice", "")
	p := newPhone(t, s, "alice", "UDP")
	// Without credentials: 401 with an MD5 and a SHA-256 challenge, qop=auth.
	p.prepare(p.registerRequest(300))
	req := p.registerRequest(300)
	p.prepare(req)
	res, err := p.cli.Do(t.Context(), req)
	if err != nil {
		t.Fatal(err)
	}
	chals := res.GetHeaders("WWW-Authenticate")
	if res.StatusCode != 401 || len(chals) != 2 || !strings.Contains(chals[0].Value(), "algorithm=MD5") ||
		!strings.Contains(chals[1].Value(), "algorithm=SHA-256") || !strings.Contains(chals[0].Value(), `qop="auth"`) ||
		!strings.Contains(chals[0].Value(), `realm="test.local"`) {
		t.Fatalf("challenge: %s %v", res.StartLine(), chals)
	}
	// A wrong password and an unknown user get the same answer.
	for _, who := range []struct{ login, password string }{{"alice", "wrong"}, {"nobody", "pw"}} {
		q := newPhone(t, s, who.login, "UDP")
		q.password = who.password
		r := q.send(q.registerRequest(300))
		if r.StatusCode != 401 || len(r.GetHeaders("WWW-Authenticate")) != 2 {
			t.Errorf("%s/%s: %s", who.login, who.password, r.StartLine())
		}
	}
	// Credentials of one user do not register another's address.
	s.addAccount("bob", "pw-bob", "")
	q := newPhone(t, s, "bob", "UDP")
	reg := q.registerRequest(300)
	aor := sip.Uri{Scheme: "sip", User: "alice", Host: testDomain}
	reg.ReplaceHeader(&sip.ToHeader{Address: aor})
	if r := q.send(reg); r.StatusCode != 403 {
		t.Fatalf("bob registers alice: %s", r.StartLine())
	}
}

// REGISTERs over a connection are framed out of the stream and answered
// beside sipgo (sipserver/internal/ingress/stream.go): two REGISTERs, one split
// across writes, with an OPTIONS between them, each get their answer on
// the connection.
func TestRegisterPipelinedOverTCP(t *testing.T) {
	s := startSIP(t)
	c := s.dial("TCP")
	request := func(method, callID string) string {
		return method + " sip:" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/TCP " + c.LocalAddr().String() + ";branch=z9hG4bK-" + callID +
			"\r\nFrom: <sip:alice@" + testDomain + ">;tag=1\r\nTo: <sip:alice@" + testDomain + ">\r\nCall-ID: " + callID +
			"\r\nCSeq: 1 " + method + "\r\nContact: <sip:alice@" + c.LocalAddr().String() + ";transport=tcp>" +
			"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	}
	second := request("REGISTER", "r2")
	for _, w := range []string{request("REGISTER", "r1") + request("OPTIONS", "o1") + second[:40], second[40:]} {
		if _, err := c.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	answers := map[string]int{}
	par := sip.NewParser().NewSIPStream()
	buf := make([]byte, 65535)
	for len(answers) < 3 {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %v: %v", answers, err)
		}
		par.ParseSIPStream(buf[:n], func(m sip.Message) {
			if res, ok := m.(*sip.Response); ok {
				answers[res.CallID().Value()] = res.StatusCode
			}
		})
	}
	if want := map[string]int{"r1": 401, "o1": 200, "r2": 401}; fmt.Sprint(answers) != fmt.Sprint(want) {
		t.Fatalf("answers %v, want %v", answers, want)
	}
}

func TestRegisterSHA256First(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.DigestAlgorithms = "SHA-256" })
	s.addAccount("alice", "pw-alice", "")
	p := newPhone(t, s, "alice", "TCP")
	res := p.register()
	if len(res.GetHeaders("Contact")) != 1 {
		t.Fatalf("200 lists %v", res.GetHeaders("Contact"))
	}
}

// REGISTER semantics on the wire: several contacts, expiry from header and
// parameter, 423 with Min-Expires, the 200 listing every binding, removal.
func TestRegisterBindings(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		s.addAccount("alice", "pw-alice", "")
		p := newPhone(t, s, "alice", "UDP")

		contactsOf := func(res *sip.Response) []string {
			var out []string
			for _, h := range res.GetHeaders("Contact") {
				out = append(out, h.Value())
			}
			return out
		}
		withContacts := func(expires int, contacts ...string) *sip.Request {
			req := p.registerRequest(expires)
			req.RemoveHeader("Contact")
			for _, c := range contacts {
				req.AppendHeader(sip.NewHeader("Contact", c))
			}
			return req
		}
		res := p.send(withContacts(600, "<sip:alice@192.0.2.1:5060>", "<sip:alice@192.0.2.2:5060>;expires=120"))
		cs := contactsOf(res)
		if res.StatusCode != 200 || len(cs) != 2 || !strings.Contains(strings.Join(cs, " "), "expires=120") ||
			!strings.Contains(strings.Join(cs, " "), "expires=600") || res.GetHeader("Date") == nil {
			t.Fatalf("two contacts: %s %v", res.StartLine(), cs)
		}
		res = p.send(withContacts(30, "<sip:alice@192.0.2.3>"))
		if res.StatusCode != 423 || res.GetHeader("Min-Expires") == nil || res.GetHeader("Min-Expires").Value() != "60" {
			t.Fatalf("too brief: %s %v", res.StartLine(), res.GetHeader("Min-Expires"))
		}
		// A query (no Contact) lists the bindings.
		q := p.registerRequest(-1)
		q.RemoveHeader("Contact")
		if res := p.send(q); len(contactsOf(res)) != 2 {
			t.Fatalf("query: %v", contactsOf(res))
		}
		res = p.send(withContacts(600, "<sip:alice@192.0.2.2:5060>;expires=0"))
		if cs := contactsOf(res); len(cs) != 1 || !strings.Contains(cs[0], "192.0.2.1") {
			t.Fatalf("after removing one: %v", cs)
		}
		// "*" needs Expires: 0.
		if res := p.send(withContacts(60, "*")); res.StatusCode != 400 {
			t.Fatalf("* with Expires 60: %s", res.StartLine())
		}
		if res := p.send(withContacts(0, "*")); res.StatusCode != 200 || len(contactsOf(res)) != 0 {
			t.Fatalf("* with Expires 0: %s %v", res.StartLine(), contactsOf(res))
		}
		// The same Call-ID with an old CSeq is refused.
		stale := withContacts(600, "<sip:alice@192.0.2.9>")
		stale.ReplaceHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.REGISTER})
		p.send(withContacts(600, "<sip:alice@192.0.2.9>"))
		if res := p.send(stale); res.StatusCode != 400 {
			t.Fatalf("old CSeq: %s", res.StartLine())
		}
	})
}

// The per-user contact limit: the oldest binding gives way (default), or
// 403 under the reject policy.
func TestContactLimit(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		for _, policy := range []string{"replace", "reject"} {
			t.Run(policy, func(t *testing.T) {
				s := startSIPOn(t, engine, func(c *configs.Config) { c.Registrar.MaxContacts = 2; c.Registrar.Overflow = policy })
				s.addAccount("alice", "pw-alice", "")
				p := newPhone(t, s, "alice", "UDP")
				var last *sip.Response
				for i := 1; i <= 3; i++ {
					req := p.registerRequest(600)
					req.ReplaceHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: fmt.Sprintf("192.0.2.%d", i)}})
					last = p.send(req)
				}
				switch policy {
				case "replace":
					cs := last.GetHeaders("Contact")
					if last.StatusCode != 200 || len(cs) != 2 || strings.Contains(cs[0].Value()+cs[1].Value(), "192.0.2.1>") {
						t.Fatalf("third contact: %s %v", last.StartLine(), cs)
					}
				case "reject":
					if last.StatusCode != 403 {
						t.Fatalf("third contact: %s", last.StartLine())
					}
				}
			})
		}
	})
}

// A device that registers again with the same instance (RFC 5626) replaces
// its old binding, even from a new address.
func TestInstanceReplacesBinding(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		s.addAccount("alice", "pw-alice", "")
		urn := "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"
		p1 := newPhone(t, s, "alice", "UDP", withInstance(urn))
		p1.register()
		p2 := newPhone(t, s, "alice", "UDP", withInstance(urn))
		res := p2.register()
		if cs := res.GetHeaders("Contact"); len(cs) != 1 || !strings.Contains(cs[0].Value(), fmt.Sprint(p2.contact.Port)) ||
			!strings.Contains(cs[0].Value(), "+sip.instance") {
			t.Fatalf("bindings after the device moved: %v", cs)
		}
	})
}

// Bindings survive a restart.
func TestBindingsSurviveRestart(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		s.addAccount("alice", "pw-alice", "")
		s.addAccount("bob", "pw-bob", "")
		p := newPhone(t, s, "alice", "UDP")
		p.register()
		s.stop()

		s2 := start(t, cfg)
		// bob's MESSAGE reaches alice's phone without her registering again.
		b := newPhone(t, s2, "bob", "UDP")
		p.sip.Target = s2.app.SIPAddr("UDP")
		if res := b.message("alice", "after restart"); res.StatusCode != 200 {
			t.Fatalf("MESSAGE after restart: %s", res.StartLine())
		}
		if got := bodies(p.waitFor(1)); got[0] != "after restart" {
			t.Fatalf("received %v", got)
		}
	})
}
