package httpapi

import (
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	tests := []struct {
		name    string
		trusted []netip.Prefix
		remote  string
		xff     []string
		want    string
	}{
		{"no proxies configured: the header is ignored", nil, "10.0.0.5:1234", []string{"1.2.3.4"}, "10.0.0.5"},
		{"untrusted peer: the header is ignored", proxies, "192.0.2.7:1234", []string{"1.2.3.4"}, "192.0.2.7"},
		{"trusted peer names the client", proxies, "10.0.0.5:1234", []string{"1.2.3.4"}, "1.2.3.4"},
		{"client-written addresses left of the last untrusted hop prove nothing", proxies, "10.0.0.5:1234", []string{"6.6.6.6, 1.2.3.4"}, "1.2.3.4"},
		{"a chain of trusted proxies is walked", proxies, "10.0.0.5:1234", []string{"1.2.3.4, 10.1.1.1", "10.2.2.2"}, "1.2.3.4"},
		{"trusted peer without the header", proxies, "10.0.0.5:1234", nil, "10.0.0.5"},
		{"a malformed hop stops the walk at the last trusted one", proxies, "10.0.0.5:1234", []string{"1.2.3.4, junk"}, "10.0.0.5"},
		{"only trusted hops: the leftmost", proxies, "10.0.0.5:1234", []string{"10.9.9.9, 10.1.1.1"}, "10.9.9.9"},
		{"IPv6 peer, IPv4-mapped client", proxies, "[::1]:8080", []string{"::ffff:198.51.100.9"}, "198.51.100.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{opts: Options{TrustedProxies: tt.trusted}}
			r := httptest.NewRequest("GET", "/gch.ashx", nil)
			r.RemoteAddr = tt.remote
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := s.clientIP(r); got != tt.want {
				t.Errorf("clientIP = %q, want %q", got, tt.want)
			}
		})
	}
}
