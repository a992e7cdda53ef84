package sipserver

import (
	"encoding/base64"
	"strings"
	"testing"
)

func TestRouteToken(t *testing.T) {
	f := flowSigner{secret: []byte("secret")}
	tok := f.routeToken("TCP", "192.0.2.1:5060", "call-1")
	if tr, src, ok := f.openRouteToken(tok, "call-1"); !ok || tr != "TCP" || src != "192.0.2.1:5060" {
		t.Fatalf("open = %q %q %v", tr, src, ok)
	}
	if _, _, ok := f.openRouteToken(tok, "call-2"); ok {
		t.Error("a token opened for another Call-ID")
	}
	if _, _, ok := (flowSigner{secret: []byte("other")}).openRouteToken(tok, "call-1"); ok {
		t.Error("a token opened under another secret")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(tok)
	raw[0] = 'U' // UCP|…: the payload changed, the MAC did not
	if _, _, ok := f.openRouteToken(base64.RawURLEncoding.EncodeToString(raw), "call-1"); ok {
		t.Error("a tampered payload opened")
	}
	for _, bad := range []string{"", "!!!", base64.RawURLEncoding.EncodeToString([]byte("short"))} {
		if _, _, ok := f.openRouteToken(bad, "call-1"); ok {
			t.Errorf("%q opened", bad)
		}
	}
}

func TestBranchToken(t *testing.T) {
	f := flowSigner{secret: []byte("secret")}
	b := f.branch("key", "UDP", "192.0.2.1:5060", "call-1")
	if !strings.HasPrefix(b, branchMagic+"key-") {
		t.Fatalf("branch %q lacks the magic cookie and loop key", b)
	}
	if b == f.branch("key", "UDP", "192.0.2.1:5060", "call-1") {
		t.Error("two branches for the same flow are equal")
	}
	if tr, src, ok := f.branchFlow(b, "call-1"); !ok || tr != "UDP" || src != "192.0.2.1:5060" {
		t.Fatalf("branchFlow = %q %q %v", tr, src, ok)
	}
	if _, _, ok := f.branchFlow(b, "call-2"); ok {
		t.Error("a branch opened for another Call-ID")
	}
	if _, _, ok := f.branchFlow("z9hG4bK-other."+b[strings.LastIndexByte(b, '.')+1:], "call-1"); ok {
		t.Error("a branch without our cookie opened")
	}
	// Neither token passes for the other.
	tok := f.routeToken("UDP", "192.0.2.1:5060", "call-1")
	if _, _, ok := f.branchFlow(branchMagic+"key-x."+tok, "call-1"); ok {
		t.Error("a Record-Route token passed as a branch")
	}
	if _, _, ok := f.openRouteToken(b[strings.LastIndexByte(b, '.')+1:], "call-1"); ok {
		t.Error("a branch token passed as a Record-Route token")
	}
}
