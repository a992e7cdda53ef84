package sipserver

import (
	"testing"

	"github.com/emiago/sipgo/sip"

	"gchd/registrar"
)

func testRouter(reg Registrar, alive ...string) router {
	s := validateServer()
	s.ports = map[string]int{"UDP": 5060, "TCP": 5060}
	return router{reg: reg, flows: flowSigner{secret: []byte("secret")}, local: s.isUs, ours: s.isOurDomain,
		alive: func(transport, source string) bool {
			for _, a := range alive {
				if a == transport+"|"+source {
					return true
				}
			}
			return false
		}}
}

func TestTargetOf(t *testing.T) {
	r := testRouter(&bindingTable{node: "n1"}, "TCP|192.0.2.9:40000")
	for _, c := range []struct {
		name string
		b    registrar.Binding
		want string // transport and destination; "" no target
	}{
		{"UDP contact as written", registrar.Binding{URI: "sip:bob@192.0.2.1:5070", Transport: "UDP", Source: "192.0.2.1:5070"}, "UDP 192.0.2.1:5070"},
		{"UDP default port", registrar.Binding{URI: "sip:bob@192.0.2.1", Transport: "UDP", Source: "192.0.2.1:6000"}, "UDP 192.0.2.1:5060"},
		{"UDP behind NAT", registrar.Binding{URI: "sip:bob@10.0.0.1:5060", Transport: "UDP", Source: "192.0.2.1:6000", NAT: true}, "UDP 192.0.2.1:6000"},
		{"TCP over its open connection", registrar.Binding{URI: "sip:bob@x.invalid;transport=tcp", Transport: "TCP", Source: "192.0.2.9:40000", Node: "n1"}, "TCP 192.0.2.9:40000"},
		{"TCP whose connection closed", registrar.Binding{URI: "sip:bob@x.invalid;transport=tcp", Transport: "TCP", Source: "192.0.2.9:40001", Node: "n1"}, ""},
		{"TCP held by another node", registrar.Binding{URI: "sip:bob@x.invalid;transport=tcp", Transport: "TCP", Source: "192.0.2.9:40001", Node: "n2"}, "TCP 192.0.2.9:40001"},
		{"unparsable URI", registrar.Binding{URI: "::", Transport: "UDP", Source: "192.0.2.1:6000"}, ""},
	} {
		tg, ok := r.targetOf(c.b)
		got := ""
		if ok {
			got = tg.transport + " " + tg.dest
		}
		if got != c.want {
			t.Errorf("%s: target %q, want %q", c.name, got, c.want)
		}
	}
}

func TestTargetsOfSkipsSleepers(t *testing.T) {
	reg := &bindingTable{bindings: map[string][]registrar.Binding{"bob": {
		{URI: "sip:bob@192.0.2.1:5060", Transport: "UDP", Source: "192.0.2.1:5060"},
		{URI: "sip:bob@192.0.2.2:5060", Transport: "UDP", Source: "192.0.2.2:5060", Asleep: true},
		{URI: "sip:bob@192.0.2.3:5060", Transport: "UDP", Source: "192.0.2.3:5060", Unreachable: true},
	}}}
	ts := testRouter(reg).targetsOf("bob")
	if len(ts) != 1 || ts[0].dest != "192.0.2.1:5060" {
		t.Fatalf("targets %+v, want the one awake and reachable", ts)
	}
}

func TestInDialogTarget(t *testing.T) {
	reg := &bindingTable{bindings: map[string][]registrar.Binding{"bob": {
		{URI: "sip:bob@192.0.2.1:5070", Transport: "UDP", Source: "192.0.2.1:5070"},
	}}}
	r := testRouter(reg)
	token := r.flows.routeToken("TCP", "192.0.2.7:41000", "validate-1@192.0.2.1") // the Call-ID of headersFor
	ours := "<sip:test.local:5060;transport=tcp;lr;" + flowParam + "=" + token + ">"
	inDialog := func(ruri string, headers ...string) *sip.Request {
		return sipRequest(t, "BYE "+ruri+" SIP/2.0", append(headersFor("BYE", nil), headers...)...)
	}
	for _, c := range []struct {
		name    string
		req     *sip.Request
		want    string // transport and destination
		signed  bool
		refusal string
	}{
		{"our signed route", inDialog("sip:alice@10.0.0.5:5060", "Route: "+ours), "TCP 192.0.2.7:41000", true, ""},
		{"signed route then a foreign one", inDialog("sip:alice@10.0.0.5:5060", "Route: "+ours, "Route: <sip:evil.example;lr>"), "", true, "Relaying Forbidden"},
		{"a foreign route only", inDialog("sip:bob@192.0.2.1:5070", "Route: <sip:evil.example;lr>"), "", false, "Relaying Forbidden"},
		{"token of another dialog", inDialog("sip:bob@192.0.2.1:5070", "Route: <sip:test.local:5060;lr;"+flowParam+"="+r.flows.routeToken("TCP", "192.0.2.7:41000", "call-2")+">"),
			"UDP 192.0.2.1:5070", false, ""},
		{"registered contact", inDialog("sip:bob@192.0.2.1:5070"), "UDP 192.0.2.1:5070", false, ""},
		{"a user of ours by name", inDialog("sip:bob@test.local"), "UDP 192.0.2.1:5070", false, ""},
		{"nobody", inDialog("sip:carol@test.local"), "", false, "Not Found"},
		{"another domain", inDialog("sip:bob@elsewhere.example"), "", false, "Not Found"},
	} {
		tg, signed, refusal := r.inDialogTarget(c.req)
		got := ""
		if refusal == "" {
			got = tg.transport + " " + tg.dest
			if tg.ruri.String() != c.req.Recipient.String() {
				t.Errorf("%s: Request-URI %s, want it kept (%s)", c.name, tg.ruri.String(), c.req.Recipient.String())
			}
		}
		if got != c.want || signed != c.signed || refusal != c.refusal {
			t.Errorf("%s: %q signed %v refusal %q, want %q %v %q", c.name, got, signed, refusal, c.want, c.signed, c.refusal)
		}
		if c.refusal == "" && c.req.Route() != nil {
			t.Errorf("%s: our Route entries are left on the request", c.name)
		}
	}
}
