package app

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"gchd/configs"
)

// hepPacket is a HEPv3 packet as a collector reads it.
type hepPacket struct {
	family, proto, protoType uint8
	src, dst                 netip.AddrPort
	at                       time.Time
	agent                    uint32
	payload                  string
}

// parseHEP reads a HEPv3 packet chunk by chunk, as Homer's heplify-server
// does, and fails on anything malformed.
func parseHEP(b []byte) (hepPacket, error) {
	var p hepPacket
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		return p, fmt.Errorf("not HEP3: %q", b[:min(len(b), 4)])
	}
	if n := int(binary.BigEndian.Uint16(b[4:6])); n != len(b) {
		return p, fmt.Errorf("length %d, datagram %d", n, len(b))
	}
	var srcIP, dstIP netip.Addr
	var srcPort, dstPort uint16
	var sec, usec uint32
	for rest := b[6:]; len(rest) > 0; {
		if len(rest) < 6 {
			return p, fmt.Errorf("truncated chunk header")
		}
		vendor, typ, n := binary.BigEndian.Uint16(rest), binary.BigEndian.Uint16(rest[2:]), int(binary.BigEndian.Uint16(rest[4:]))
		if vendor != 0 || n < 6 || n > len(rest) {
			return p, fmt.Errorf("chunk %d: vendor %d, length %d of %d", typ, vendor, n, len(rest))
		}
		v := rest[6:n]
		rest = rest[n:]
		switch typ {
		case 1:
			p.family = v[0]
		case 2:
			p.proto = v[0]
		case 3, 5:
			srcIP, _ = netip.AddrFromSlice(v)
		case 4, 6:
			dstIP, _ = netip.AddrFromSlice(v)
		case 7:
			srcPort = binary.BigEndian.Uint16(v)
		case 8:
			dstPort = binary.BigEndian.Uint16(v)
		case 9:
			sec = binary.BigEndian.Uint32(v)
		case 10:
			usec = binary.BigEndian.Uint32(v)
		case 11:
			p.protoType = v[0]
		case 12:
			p.agent = binary.BigEndian.Uint32(v)
		case 15:
			p.payload = string(v)
		}
	}
	p.src, p.dst = netip.AddrPortFrom(srcIP, srcPort), netip.AddrPortFrom(dstIP, dstPort)
	p.at = time.Unix(int64(sec), int64(usec)*1000)
	return p, nil
}

// hepCollector is a local HEP collector: a UDP socket that parses what
// it receives.
type hepCollector struct {
	conn net.PacketConn
	mu   sync.Mutex
	got  []hepPacket
	bad  []error
}

func newHEPCollector(t *testing.T) *hepCollector {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	h := &hepCollector{conn: c}
	go func() {
		buf := make([]byte, 70000)
		for {
			n, _, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			p, err := parseHEP(bytes.Clone(buf[:n]))
			h.mu.Lock()
			if err != nil {
				h.bad = append(h.bad, err)
			} else {
				h.got = append(h.got, p)
			}
			h.mu.Unlock()
		}
	}()
	return h
}

// find waits for a packet whose payload starts with start and holds callID.
func (h *hepCollector) find(t *testing.T, start, callID string) hepPacket {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		for _, p := range h.got {
			if strings.HasPrefix(p.payload, start) && strings.Contains(p.payload, "Call-ID: "+callID+"\r\n") {
				h.mu.Unlock()
				return p
			}
		}
		n, bad := len(h.got), h.bad
		h.mu.Unlock()
		if len(bad) > 0 {
			t.Fatalf("malformed HEP: %v", bad)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no HEP packet %q of Call-ID %s among %d", start, callID, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// With trace.hep_addr set, every SIP message gchd reads and writes goes
// to the collector in HEPv3, with its addresses, ports, time and bytes:
// over UDP, TCP and WebSocket.
func TestHEPMirror(t *testing.T) {
	col := newHEPCollector(t)
	s := startSIP(t, func(c *configs.Config) {
		c.Trace.HEPAddr = col.conn.LocalAddr().String()
		c.Trace.HEPAgentID = 2001
	})
	s.addAccount("ann", "pw-ann", "")
	s.addAccount("bob", "pw-bob", "")
	s.addAccount("cyd", "pw-cyd", "")
	before := time.Now().Add(-time.Millisecond)
	ann := newPhone(t, s, "ann", "UDP")
	ann.register()
	bob := newPhone(t, s, "bob", "TCP")
	bob.register()
	cyd := newPhone(t, s, "cyd", "WS")
	cyd.register()
	after := time.Now().Add(time.Millisecond)

	server := netip.MustParseAddrPort(s.app.SIPAddr("UDP"))
	phone := ann.sip.Conn.LocalAddr().(*net.UDPAddr).AddrPort()
	req := col.find(t, "REGISTER sip:", ann.callID)
	if !strings.Contains(req.payload, "Authorization: Digest") {
		req = col.find(t, "REGISTER sip:", ann.callID) // the first, unauthenticated, is also there
	}
	ok := col.find(t, "SIP/2.0 200 OK", ann.callID)
	challenge := col.find(t, "SIP/2.0 401", ann.callID)
	for name, c := range map[string]struct {
		p        hepPacket
		src, dst netip.AddrPort
	}{"REGISTER": {req, phone, server}, "200": {ok, server, phone}, "401": {challenge, server, phone}} {
		p := c.p
		if p.family != 2 || p.proto != 17 || p.protoType != 1 || p.agent != 2001 {
			t.Errorf("%s: family %d proto %d type %d agent %d", name, p.family, p.proto, p.protoType, p.agent)
		}
		if p.src != c.src || p.dst != c.dst {
			t.Errorf("%s: %s -> %s, want %s -> %s", name, p.src, p.dst, c.src, c.dst)
		}
		if p.at.Before(before) || p.at.After(after) {
			t.Errorf("%s: time %v not within %v .. %v", name, p.at, before, after)
		}
		if !strings.Contains(p.payload, "\r\n\r\n") || !strings.Contains(p.payload, "CSeq: ") {
			t.Errorf("%s: payload %q", name, p.payload)
		}
	}
	if ok.at.Before(req.at) {
		t.Errorf("the 200 (%v) is older than the first REGISTER (%v)", ok.at, req.at)
	}

	// TCP: the ingress's REGISTERs and answers.
	tcpServer := netip.MustParseAddrPort(s.app.SIPAddr("TCP"))
	r, a := col.find(t, "REGISTER sip:", bob.callID), col.find(t, "SIP/2.0 200 OK", bob.callID)
	if r.proto != 6 || a.proto != 6 || r.dst != tcpServer || a.src != tcpServer || r.src != a.dst || r.src.Port() == 0 {
		t.Errorf("TCP: REGISTER %s -> %s proto %d, 200 %s -> %s proto %d", r.src, r.dst, r.proto, a.src, a.dst, a.proto)
	}
	// WebSocket: the frames' payloads, both ways.
	wsServer := netip.MustParseAddrPort(s.app.SIPAddr("WS"))
	r, a = col.find(t, "REGISTER sip:", cyd.callID), col.find(t, "SIP/2.0 200 OK", cyd.callID)
	if r.proto != 6 || r.dst != wsServer || a.src != wsServer || r.src != a.dst {
		t.Errorf("WS: REGISTER %s -> %s, 200 %s -> %s", r.src, r.dst, a.src, a.dst)
	}

	// A message relayed: in from ann, out to bob, and bob's answer back.
	if res := ann.message("bob", "hello over HEP"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	bob.waitFor(1)
	// The mirror of what gchd wrote is sent after the write itself, so it
	// may reach the collector a moment after bob has the message.
	var in, out int
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		in, out = 0, 0
		col.mu.Lock()
		for _, p := range col.got {
			if strings.HasPrefix(p.payload, "MESSAGE sip:") && strings.HasSuffix(p.payload, "hello over HEP") {
				if p.dst == server {
					in++
				}
				if p.src == tcpServer {
					out++
				}
			}
		}
		col.mu.Unlock()
		if (in > 0 && out > 0) || time.Now().After(deadline) {
			break
		}
	}
	if in == 0 || out == 0 {
		t.Errorf("MESSAGE mirrored in %d and out %d times", in, out)
	}
	// And sipgo's own writes on the UDP socket: a request relayed to ann.
	if res := bob.message("ann", "back over UDP"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE to ann: %s", res.StartLine())
	}
	ann.waitFor(1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		found := false
		col.mu.Lock()
		for _, p := range col.got {
			if strings.HasPrefix(p.payload, "MESSAGE sip:") && strings.HasSuffix(p.payload, "back over UDP") &&
				p.src == server && p.dst == phone && p.proto == 17 {
				found = true
			}
		}
		col.mu.Unlock()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the MESSAGE relayed to ann over UDP was not mirrored")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v, _ := metricValue(t, s, "gchd_trace_hep_dropped_total"); v != 0 {
		t.Errorf("dropped %v", v)
	}
}

// Without trace.hep_addr nothing is sent anywhere.
func TestHEPOffByDefault(t *testing.T) {
	if configs.Default().Trace.HEPAddr != "" {
		t.Fatal("HEP is on by default")
	}
	cfg := testConfig(t, "sqlite")
	cfg.Trace.HEPAddr = "127.0.0.1:0"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "trace.hep_addr") {
		t.Fatalf("port 0: %v", err)
	}
	cfg.Trace.HEPAddr = "collector"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Fatalf("no port: %v", err)
	}
}
