package sipserver

import (
	"regexp"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// A REGISTER's answer, built without sipgo's copies, is byte for byte what
// sipgo builds (but for the random To tag), and building it leaves the
// request as it was.
func TestRegisterResponseMatchesSipgo(t *testing.T) {
	const tail = "From: \"Alice\" <sip:alice@example.org>;tag=a1\r\n" +
		"Call-ID: c1@192.0.2.10\r\nCSeq: 7 REGISTER\r\nContact: <sip:alice@192.0.2.10:5062>\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	tests := []struct{ name, msg string }{
		{"rport asked", "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-1;rport\r\n" +
			"To: <sip:alice@example.org>\r\n" + tail},
		{"no rport", "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-2\r\n" +
			"To: \"Alice\" <sip:alice@example.org>;x=1\r\n" + tail},
		{"rport with a value", "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;rport=5062;branch=z9hG4bK-3\r\n" +
			"To: <sip:alice@example.org>\r\n" + tail},
		{"two Vias", "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-4;rport\r\n" +
			"Via: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-5;rport\r\nTo: <sip:alice@example.org>\r\n" + tail},
		{"To with a tag", "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5062;branch=z9hG4bK-6;rport\r\n" +
			"To: <sip:alice@example.org>;tag=t9\r\n" + tail},
	}
	tag := regexp.MustCompile(`(To: [^\r]*;tag=)[^;\r]*`)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := sip.NewParser().ParseSIP([]byte(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			req := msg.(*sip.Request)
			req.SetTransport("UDP")
			req.SetSource("198.51.100.7:40000")
			before := req.String()
			for _, code := range []int{200, 401} {
				want := sip.NewResponseFromRequest(req, code, "Reason", nil)
				if after := req.String(); after != before {
					t.Fatalf("sipgo changed the request:\n%s", after)
				}
				got := newResponse(req, code, "Reason")
				if after := req.String(); after != before {
					t.Fatalf("newResponse changed the request:\n%s", after)
				}
				w, g := tag.ReplaceAllString(want.String(), "${1}T"), tag.ReplaceAllString(got.String(), "${1}T")
				if g != w {
					t.Errorf("%d:\n%s\nwant (sipgo's):\n%s", code, g, w)
				}
				if got.Destination() != want.Destination() || got.Transport() != want.Transport() {
					t.Errorf("%d: to %s over %s, want %s over %s", code, got.Destination(), got.Transport(), want.Destination(), want.Transport())
				}
				if strings.Contains(tt.msg, "tag=t9") != strings.Contains(got.String(), "tag=t9") {
					t.Errorf("%d: the request's To tag was not kept", code)
				}
			}
		})
	}
}
