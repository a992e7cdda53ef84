package sipserver

import (
	"testing"

	"github.com/emiago/sipgo/sip"
)

func TestBehindNAT(t *testing.T) {
	for _, c := range []struct {
		name      string
		transport string
		source    string
		via       string
		contact   string
		trusted   bool
		want      bool
	}{
		{"UDP contact is the source", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@192.0.2.1:5060", false, false},
		{"UDP receives on another port", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@192.0.2.1:6000", false, false},
		{"UDP Via default port", "UDP", "192.0.2.1:5060", "192.0.2.1", "sip:a@192.0.2.1:5060", false, false},
		{"UDP private contact", "UDP", "192.0.2.1:4000", "10.0.0.2:5060", "sip:a@10.0.0.2:5060", false, true},
		{"UDP Via lies about the port", "UDP", "192.0.2.1:4000", "192.0.2.1:5060", "sip:a@192.0.2.1:5060", false, true},
		{"UDP contact elsewhere", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@198.51.100.7:5060", false, true},
		{"UDP contact a host name", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@phone.example:5060", false, true},
		{"UDP .invalid", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@x.invalid", true, true},
		{"UDP from a trusted SBC", "UDP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@10.0.0.2:5060", true, false},
		{"TCP always its connection", "TCP", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@192.0.2.1:5060", true, true},
		{"WS always its connection", "WS", "192.0.2.1:5060", "192.0.2.1:5060", "sip:a@192.0.2.1:5060", false, true},
	} {
		req := sipRequest(t, "REGISTER sip:test.local SIP/2.0", headersFor("REGISTER", []string{"Via"},
			"Via: SIP/2.0/"+c.transport+" "+c.via+";branch=z9hG4bK-n1")...)
		req.SetTransport(c.transport)
		req.SetSource(c.source)
		var contact sip.Uri
		if err := sip.ParseUri(c.contact, &contact); err != nil {
			t.Fatal(err)
		}
		if got := behindNAT(req, contact, c.trusted); got != c.want {
			t.Errorf("%s: behindNAT %v, want %v", c.name, got, c.want)
		}
	}
}
