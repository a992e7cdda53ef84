package sipserver

import (
	"crypto/md5"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/icholy/digest"
)

func TestParseCredentials(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want credentials
		bad  bool
	}{
		{name: "SIPp", in: `Digest username="user00001",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:127.0.0.1:5080",nonce="abc",response="0123",algorithm=MD5`,
			want: credentials{Username: "user00001", Realm: "127.0.0.1", Cnonce: "6b8b4567", Nc: 1, QOP: "auth", URI: "sip:127.0.0.1:5080", Nonce: "abc", Response: "0123", Algorithm: "MD5"}},
		{name: "spaces, case, unknown params", in: "digest  Username = \"bob\" ,\tREALM=\"x\", opaque=\"\", userhash=false, nc=0000000a, response=ff",
			want: credentials{Username: "bob", Realm: "x", Nc: 10, Response: "ff"}},
		{name: "escapes", in: `Digest username="a\"b\\c", realm="r"`, want: credentials{Username: `a"b\c`, Realm: "r"}},
		{name: "no qop", in: `Digest username="u", realm="r", nonce="n", uri="sip:r", response="x"`,
			want: credentials{Username: "u", Realm: "r", Nonce: "n", URI: "sip:r", Response: "x"}},
		{name: "SHA-256", in: `Digest username="u", algorithm=SHA-256`, want: credentials{Username: "u", Algorithm: "SHA-256"}},
		{name: "scheme only", in: "Digest ", want: credentials{}},
		{name: "tab after the scheme", in: "Digest\tusername=\"u\"", want: credentials{Username: "u"}},
		{name: "basic", in: `Basic dXNlcjpwYXNz`, bad: true},
		{name: "no scheme", in: `username="u"`, bad: true},
		{name: "empty", in: ``, bad: true},
		{name: "unterminated quote", in: `Digest username="u`, bad: true},
		{name: "escape at the end", in: `Digest username="u\"`, bad: true},
		{name: "missing comma", in: `Digest username="u" realm="r"`, bad: true},
		{name: "missing value", in: `Digest username=, realm="r"`, bad: true},
		{name: "missing equals", in: `Digest username`, bad: true},
		{name: "trailing comma", in: `Digest username="u",`, bad: true},
		{name: "bad nc", in: `Digest nc=zz`, bad: true},
		{name: "negative nc", in: `Digest nc=-1`, bad: true},
		{name: "huge nc", in: `Digest nc=ffffffffff`, bad: true},
		{name: "line break in quotes", in: "Digest username=\"u\r\nVia: x\"", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCredentials(tt.in)
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// What a digest client library writes, the parser reads back the same.
func TestParseCredentialsRoundTrip(t *testing.T) {
	for _, c := range []digest.Credentials{
		{Username: "alice", Realm: "example.com", Nonce: "bm9uY2U", URI: "sip:example.com", Response: "6629fae49393a05397450978507c4ef1",
			Algorithm: "MD5", Cnonce: "0a4f113b", QOP: "auth", Nc: 1},
		{Username: `we"ird\name`, Realm: "r r", Nonce: "n", URI: "sip:x;transport=tcp", Response: "ab", Algorithm: "SHA-256", Nc: 0x7fffffff, QOP: "auth", Cnonce: "c"},
		{Username: "ünïcode", Realm: "r", Nonce: "n", URI: "sip:r", Response: "r"},
	} {
		got, err := parseCredentials(c.String())
		if err != nil {
			t.Fatalf("%s: %v", c.String(), err)
		}
		want := credentials{Username: c.Username, Realm: c.Realm, Nonce: c.Nonce, URI: c.URI, Response: c.Response,
			Algorithm: c.Algorithm, Cnonce: c.Cnonce, QOP: c.QOP, Nc: c.Nc}
		if got != want {
			t.Fatalf("%s:\ngot  %+v\nwant %+v", c.String(), got, want)
		}
	}
}

func FuzzParseCredentials(f *testing.F) {
	f.Add(`Digest username="u", realm="r", nc=00000001, response="x"`)
	f.Add(`Digest username="a\"b", qop=auth`)
	f.Fuzz(func(t *testing.T, s string) {
		parseCredentials(s) // must not panic
	})
}

// go test -bench ParseCredentials ./sipserver: this parser beside the
// library one it replaced.
func BenchmarkParseCredentials(b *testing.B) {
	const h = `Digest username="user00001",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,qop=auth,uri="sip:127.0.0.1:5080",nonce="AAYFt3XbQ0IAAAABk8Cqh1VvnvV0D6yQ3Zx1sQ",response="a8cd3e5e8f3b8f8b3c2c8e1f6f2e9d1a",algorithm=MD5`
	b.Run("gchd", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseCredentials(h); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("icholy", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := digest.ParseCredentials(h); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// The response is RFC 7616's H(HA1:nonce:nc:cnonce:qop:H(method:uri)) with
// nc as 8 lowercase hex digits, or H(HA1:nonce:H(method:uri)) without qop.
func TestExpectedResponse(t *testing.T) {
	md5hex := func(s string) string { return fmt.Sprintf("%x", md5.Sum([]byte(s))) }
	sha256hex := func(s string) string { return fmt.Sprintf("%x", sha256.Sum256([]byte(s))) }
	for _, nc := range []int{0, 1, 0xa, 0xff, 0x1234567, 0x7fffffff} {
		c := credentials{Nonce: "n0nce", URI: "sip:example.com", Cnonce: "c", QOP: "auth", Nc: nc}
		ha2 := md5hex("REGISTER:sip:example.com")
		want := md5hex(fmt.Sprintf("ha1:n0nce:%08x:c:auth:%s", nc, ha2))
		if got := expected("MD5", "ha1", "REGISTER", &c); got != want {
			t.Errorf("MD5 nc=%x: %s, want %s", nc, got, want)
		}
		ha2 = sha256hex("REGISTER:sip:example.com")
		want = sha256hex(fmt.Sprintf("ha1:n0nce:%08x:c:auth:%s", nc, ha2))
		if got := expected("SHA-256", "ha1", "REGISTER", &c); got != want {
			t.Errorf("SHA-256 nc=%x: %s, want %s", nc, got, want)
		}
	}
	c := credentials{Nonce: "n", URI: "sip:x"}
	if got, want := expected("MD5", "ha1", "INVITE", &c), md5hex("ha1:n:"+md5hex("INVITE:sip:x")); got != want {
		t.Errorf("without qop: %s, want %s", got, want)
	}
}
