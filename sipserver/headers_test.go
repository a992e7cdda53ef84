package sipserver

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestHeaderLookup(t *testing.T) {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "example.com"})
	req.AppendHeader(sip.NewHeader("authorization", "Digest a"))
	req.AppendHeader(sip.NewHeader("X-GC-MID", "1"))
	req.AppendHeader(sip.NewHeader("Supported", "path"))
	req.AppendHeader(sip.NewHeader("SUPPORTED", "outbound"))

	for _, tc := range []struct {
		name string
		want []string // values of every header of that name, in order
	}{
		{"Authorization", []string{"Digest a"}},
		{"x-gc-mid", []string{"1"}},
		{"Supported", []string{"path", "outbound"}},
		{"Expires", nil},
	} {
		var got []string
		for h := range headersNamed(req, tc.name) {
			got = append(got, h.Value())
		}
		if len(got) != len(tc.want) {
			t.Errorf("headersNamed(%q) = %q, want %q", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("headersNamed(%q) = %q, want %q", tc.name, got, tc.want)
			}
		}
		h := header(req, tc.name)
		switch {
		case tc.want == nil && h != nil:
			t.Errorf("header(%q) = %v, want none", tc.name, h)
		case tc.want != nil && (h == nil || h.Value() != tc.want[0]):
			t.Errorf("header(%q) = %v, want %q", tc.name, h, tc.want[0])
		}
	}
	if n := testing.AllocsPerRun(100, func() { header(req, "Expires") }); n != 0 {
		t.Errorf("header allocates %.0f times, want 0", n)
	}
}

func TestCredentialRealm(t *testing.T) {
	for _, c := range []struct {
		in    string
		realm string
		ok    bool
	}{
		{`Digest username="alice", realm="test.local", nonce="n", uri="sip:bob@test.local", response="r"`, "test.local", true},
		{`Digest realm=other.example,username="a"`, "other.example", true},
		{`Digest username="a\",realm=\"fake", realm="real"`, "real", true},
		{`Digest username="alice"`, "", false},
		{`Digest`, "", false},
		{`Digest username="unterminated, realm="x`, "", false},
	} {
		realm, ok := credentialRealm(c.in)
		if realm != c.realm || ok != c.ok {
			t.Errorf("credentialRealm(%q) = %q, %v; want %q, %v", c.in, realm, ok, c.realm, c.ok)
		}
	}
}
