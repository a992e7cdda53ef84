package sipserver

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// validateServer is the least of a Server that validate needs: its domain.
func validateServer() *Server {
	return &Server{Stack: &Stack{hosts: map[string]bool{"test.local": true, "127.0.0.1": true}}}
}

// sipRequest parses a request made of a start line and header lines.
func sipRequest(t testing.TB, start string, headers ...string) *sip.Request {
	t.Helper()
	raw := start + "\r\n" + strings.Join(headers, "\r\n") + "\r\n\r\n"
	m, err := sip.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	req, ok := m.(*sip.Request)
	if !ok {
		t.Fatalf("%q is not a request", raw)
	}
	return req
}

// headersFor is a well-formed header section for method, with extra
// header lines appended and the lines named in drop left out.
func headersFor(method string, drop []string, extra ...string) []string {
	base := []string{
		"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-v1",
		"Max-Forwards: 70",
		"From: <sip:alice@test.local>;tag=a1",
		"To: <sip:bob@test.local>",
		"Call-ID: validate-1@192.0.2.1",
		"CSeq: 7 " + method,
		"Content-Length: 0",
	}
	var out []string
	for _, h := range base {
		name, _, _ := strings.Cut(h, ":")
		if !contains(drop, name) {
			out = append(out, h)
		}
	}
	return append(out, extra...)
}

func TestValidate(t *testing.T) {
	s := validateServer()
	cases := []struct {
		name    string
		start   string
		headers []string
		code    int    // 0: the request passes
		header  string // a header the rejection must carry, "Name: value"
	}{
		{name: "INVITE", start: "INVITE sip:bob@test.local SIP/2.0", headers: headersFor("INVITE", nil)},
		{name: "REGISTER", start: "REGISTER sip:test.local SIP/2.0",
			headers: headersFor("REGISTER", []string{"To"}, "To: <sip:alice@test.local>", "Contact: <sip:alice@192.0.2.1>")},
		{name: "MESSAGE to a foreign domain passes (the proxy refuses it later)", start: "MESSAGE sip:x@example.com SIP/2.0",
			headers: headersFor("MESSAGE", nil)},
		{name: "no Max-Forwards (RFC 2543)", start: "INVITE sip:bob@test.local SIP/2.0", headers: headersFor("INVITE", []string{"Max-Forwards"})},
		{name: "unknown method with matching CSeq", start: "Foo sip:bob@test.local SIP/2.0", headers: headersFor("Foo", nil)},
		{name: "sips Request-URI", start: "INVITE sips:bob@test.local SIP/2.0", headers: headersFor("INVITE", nil)},
		{name: "CSeq method after several spaces", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", []string{"CSeq"}, "CSeq: 7   INVITE")},

		{name: "SIP/3.0", start: "OPTIONS sip:test.local SIP/3.0", headers: headersFor("OPTIONS", nil), code: 505},
		{name: "SIP/1.0", start: "OPTIONS sip:test.local SIP/1.0", headers: headersFor("OPTIONS", nil), code: 505},

		{name: "no From", start: "INVITE sip:bob@test.local SIP/2.0", headers: headersFor("INVITE", []string{"From"}), code: 400},
		{name: "no To", start: "INVITE sip:bob@test.local SIP/2.0", headers: headersFor("INVITE", []string{"To"}), code: 400},
		{name: "no Call-ID", start: "INVITE sip:bob@test.local SIP/2.0", headers: headersFor("INVITE", []string{"Call-ID"}), code: 400},
		{name: "two From", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "From: <sip:eve@test.local>;tag=e"), code: 400},
		{name: "two To", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "To: <sip:carol@test.local>"), code: 400},
		{name: "two Call-ID", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "i: other@192.0.2.1"), code: 400},
		{name: "two CSeq", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "CSeq: 8 INVITE"), code: 400},
		{name: "two Max-Forwards", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "Max-Forwards: 5"), code: 400},
		{name: "two Content-Length", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "l: 0"), code: 400},

		{name: "CSeq method mismatch", start: "OPTIONS sip:test.local SIP/2.0", headers: headersFor("INVITE", nil), code: 400},
		{name: "CSeq method mismatch, unknown method", start: "NEWMETHOD sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil), code: 400},
		{name: "Max-Forwards 255", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", []string{"Max-Forwards"}, "Max-Forwards: 255")},
		{name: "Max-Forwards 256", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", []string{"Max-Forwards"}, "Max-Forwards: 256"), code: 400},
		{name: "headers in the Request-URI", start: "INVITE sip:bob@test.local?Route=%3Csip:example.com%3E SIP/2.0",
			headers: headersFor("INVITE", nil), code: 400},
		{name: "REGISTER with a non-SIP To", start: "REGISTER sip:test.local SIP/2.0",
			headers: headersFor("REGISTER", []string{"To"}, "To: <isbn:2983792873>"), code: 400},

		{name: "unknown Request-URI scheme", start: "OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0",
			headers: headersFor("OPTIONS", nil), code: 416},
		{name: "tel Request-URI", start: "INVITE tel:+15551234567 SIP/2.0", headers: headersFor("INVITE", nil), code: 416},

		{name: "Max-Forwards 0 on INVITE", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", []string{"Max-Forwards"}, "Max-Forwards: 0"), code: 483},
		{name: "Max-Forwards 0 on OPTIONS for a user", start: "OPTIONS sip:user@example.com SIP/2.0",
			headers: headersFor("OPTIONS", []string{"Max-Forwards"}, "Max-Forwards: 0"), code: 483},
		{name: "Max-Forwards 0 on OPTIONS to the server", start: "OPTIONS sip:test.local SIP/2.0",
			headers: headersFor("OPTIONS", []string{"Max-Forwards"}, "Max-Forwards: 0")},
		{name: "Max-Forwards 0 on REGISTER", start: "REGISTER sip:test.local SIP/2.0",
			headers: headersFor("REGISTER", []string{"Max-Forwards", "To"}, "Max-Forwards: 0", "To: <sip:alice@test.local>")},

		{name: "Proxy-Require unknown", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "Proxy-Require: foo"), code: 420, header: "Unsupported: foo"},
		{name: "Proxy-Require unknown tags listed once each", start: "MESSAGE sip:bob@test.local SIP/2.0",
			headers: headersFor("MESSAGE", nil, "Proxy-Require: foo, Foo,bar", "proxy-require: outbound, baz"),
			code:    420, header: "Unsupported: foo, bar, baz"},
		{name: "Proxy-Require supported", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "Proxy-Require: outbound")},
		{name: "Require on a proxied INVITE is for the callee", start: "INVITE sip:bob@test.local SIP/2.0",
			headers: headersFor("INVITE", nil, "Require: 100rel, timer")},
		{name: "Require on a proxied OPTIONS is for the user", start: "OPTIONS sip:bob@test.local SIP/2.0",
			headers: headersFor("OPTIONS", nil, "Require: foo")},
		{name: "Require unknown on REGISTER", start: "REGISTER sip:test.local SIP/2.0",
			headers: headersFor("REGISTER", []string{"To"}, "To: <sip:alice@test.local>", "Require: gruu, outbound"),
			code:    420, header: "Unsupported: gruu"},
		{name: "Require outbound on REGISTER", start: "REGISTER sip:test.local SIP/2.0",
			headers: headersFor("REGISTER", []string{"To"}, "To: <sip:alice@test.local>", "Require: outbound", "Supported: path")},
		{name: "Require and Proxy-Require on OPTIONS to the server", start: "OPTIONS sip:test.local SIP/2.0",
			headers: headersFor("OPTIONS", nil, "Require: a", "Proxy-Require: b"), code: 420, header: "Unsupported: a, b"},
		{name: "CANCEL is never refused for extensions", start: "CANCEL sip:bob@test.local SIP/2.0",
			headers: headersFor("CANCEL", nil, "Proxy-Require: foo", "Require: bar")},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := sipRequest(t, c.start, c.headers...)
			res := s.validate(req)
			switch {
			case c.code == 0 && res != nil:
				t.Fatalf("rejected with %d %s, want it to pass", res.StatusCode, res.Reason)
			case c.code == 0:
				return
			case res == nil:
				t.Fatalf("passed, want %d", c.code)
			case res.StatusCode != c.code:
				t.Fatalf("got %d %s, want %d", res.StatusCode, res.Reason, c.code)
			}
			if res.SipVersion != "SIP/2.0" {
				t.Errorf("response version %q, want SIP/2.0", res.SipVersion)
			}
			if c.header != "" {
				name, value, _ := strings.Cut(c.header, ": ")
				if h := res.GetHeader(name); h == nil || h.Value() != value {
					t.Errorf("%s: got %v, want %q", name, h, value)
				}
			}
			// The response must still reach the sender: the transaction
			// headers are copied.
			if req.Via() != nil && res.Via() == nil {
				t.Error("response without Via")
			}
		})
	}
}

// TestValidateAllocations: validate runs on every request; a request it
// lets through costs no allocation.
func TestValidateAllocations(t *testing.T) {
	s := validateServer()
	for _, req := range []*sip.Request{
		sipRequest(t, "INVITE sip:bob@test.local SIP/2.0", headersFor("INVITE", nil,
			"Contact: <sip:alice@192.0.2.1>", "Supported: 100rel, timer", "Require: 100rel", "Proxy-Require: outbound")...),
		sipRequest(t, "REGISTER sip:test.local SIP/2.0", headersFor("REGISTER", []string{"To"},
			"To: <sip:alice@test.local>", "Contact: <sip:alice@192.0.2.1>", "Require: outbound")...),
		sipRequest(t, "OPTIONS sip:test.local SIP/2.0", headersFor("OPTIONS", nil)...),
	} {
		if n := testing.AllocsPerRun(200, func() {
			if s.validate(req) != nil {
				t.Fatal("rejected")
			}
		}); n != 0 {
			t.Errorf("%s: %v allocations per request, want 0", req.Method, n)
		}
	}
}

func BenchmarkValidate(b *testing.B) {
	s := validateServer()
	req := sipRequest(b, "INVITE sip:bob@test.local SIP/2.0", headersFor("INVITE", nil,
		"Contact: <sip:alice@192.0.2.1>", "Supported: 100rel, timer", "Require: 100rel", "Proxy-Require: outbound")...)
	b.ReportAllocs()
	for b.Loop() {
		s.validate(req)
	}
}
