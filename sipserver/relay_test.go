package sipserver

import (
	"testing"
)

// A relay token opens only for its Call-ID, under the nodes' secret, and
// no other kind of token passes for one (nor it for them).
func TestRelayToken(t *testing.T) {
	f := flowSigner{secret: []byte("secret")}
	tok := f.relayToken("TCP", "192.0.2.1:40000", "call-1")
	if tr, dest, ok := f.openRelayToken(tok, "call-1"); !ok || tr != "TCP" || dest != "192.0.2.1:40000" {
		t.Fatalf("open = %q %q %v", tr, dest, ok)
	}
	cases := []struct {
		name string
		ok   bool
	}{
		{"another Call-ID", func() bool { _, _, ok := f.openRelayToken(tok, "call-2"); return ok }()},
		{"another secret", func() bool {
			_, _, ok := (flowSigner{secret: []byte("other")}).openRelayToken(tok, "call-1")
			return ok
		}()},
		{"a Record-Route token as relay", func() bool {
			_, _, ok := f.openRelayToken(f.routeToken("TCP", "192.0.2.1:40000", "call-1"), "call-1")
			return ok
		}()},
		{"a relay token as Record-Route", func() bool { _, _, ok := f.openRouteToken(tok, "call-1"); return ok }()},
		{"garbage", func() bool {
			_, _, ok := f.openRelayToken("VURQfDEyNy4wLjAuMTo1MDYwAAAAAAAAAAAAAAAA", "call-1")
			return ok
		}()},
	}
	for _, c := range cases {
		if c.ok {
			t.Errorf("%s opened", c.name)
		}
	}
}
