package sipserver

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestLoopKey(t *testing.T) {
	base := func(extra ...string) *sip.Request {
		return sipRequest(t, "MESSAGE sip:bob@test.local SIP/2.0", headersFor("MESSAGE", nil, extra...)...)
	}
	key := loopKey(base())
	if key != loopKey(base()) {
		t.Fatal("the same request has two loop keys")
	}
	if key != loopKey(base("Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-other")) {
		t.Error("a Via changed the loop key: a request coming back would not be seen")
	}
	for name, req := range map[string]*sip.Request{
		"Request-URI": sipRequest(t, "MESSAGE sip:bob@192.0.2.1 SIP/2.0", headersFor("MESSAGE", nil)...),
		"From tag":    sipRequest(t, "MESSAGE sip:bob@test.local SIP/2.0", headersFor("MESSAGE", []string{"From"}, "From: <sip:alice@test.local>;tag=a2")...),
		"Call-ID":     sipRequest(t, "MESSAGE sip:bob@test.local SIP/2.0", headersFor("MESSAGE", []string{"Call-ID"}, "Call-ID: other")...),
		"CSeq":        sipRequest(t, "MESSAGE sip:bob@test.local SIP/2.0", headersFor("MESSAGE", []string{"CSeq"}, "CSeq: 8 MESSAGE")...),
	} {
		if loopKey(req) == key {
			t.Errorf("another %s, the same loop key: a spiral would pass for a loop", name)
		}
	}
}

func TestLooped(t *testing.T) {
	s := validateServer()
	s.ports = map[string]int{"UDP": 5060}
	req := func(via string) *sip.Request {
		r := sipRequest(t, "MESSAGE sip:bob@test.local SIP/2.0", headersFor("MESSAGE", nil)...)
		if via != "" {
			r.PrependHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: via, Port: 5060,
				Params: sip.HeaderParams{{K: "branch", V: branchMagic + loopKey(r) + "-x.y"}}})
		}
		return r
	}
	if looped(req(""), s.isUs) {
		t.Error("a request that never passed us looped")
	}
	if !looped(req("test.local"), s.isUs) {
		t.Error("a request back with our Via and its loop key did not loop")
	}
	if looped(req("192.0.2.50"), s.isUs) {
		t.Error("another proxy's Via with our branch shape looped")
	}
	spiral := req("test.local")
	spiral.Recipient = sip.Uri{Scheme: "sip", User: "bob", Host: "192.0.2.1"}
	if looped(spiral, s.isUs) {
		t.Error("a spiral (another Request-URI) looped")
	}
}
