package trace

import (
	"net/netip"
	"testing"
	"time"
)

// A full queue drops and counts: Capture never waits for the sender.
func TestCaptureDropsWhenFull(t *testing.T) {
	drops := 0
	h := &HEP{queue: make(chan []byte, 2), onDrop: func() { drops++ }}
	a := netip.MustParseAddrPort("127.0.0.1:5060")
	start := time.Now()
	for range 5 {
		h.Capture(ProtoUDP, a, a, time.Now(), []byte("OPTIONS sip:x SIP/2.0\r\n\r\n"))
	}
	if h.Dropped() != 3 || drops != 3 || len(h.queue) != 2 {
		t.Fatalf("dropped %d (callback %d), queued %d; want 3, 3, 2", h.Dropped(), drops, len(h.queue))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("capturing into a full queue took %v", d)
	}
}

// An IPv6 packet carries the IPv6 family and 16-byte addresses.
func TestEncodeIPv6(t *testing.T) {
	b := Encode(Packet{Src: netip.MustParseAddrPort("[2001:db8::1]:5060"), Dst: netip.MustParseAddrPort("[2001:db8::2]:5070"),
		IPProto: ProtoTCP, Time: time.Unix(1700000000, 123456000), AgentID: 7, Payload: []byte("x")})
	if string(b[:4]) != "HEP3" || int(b[4])<<8|int(b[5]) != len(b) {
		t.Fatalf("header %q, length %d", b[:6], len(b))
	}
	// family chunk first: vendor 0, type 1, length 7, value 10
	if got := b[6:13]; got[3] != 1 || got[5] != 7 || got[6] != familyIPv6 {
		t.Fatalf("family chunk % x", got)
	}
}
