package sipserver

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"
)

// Mirror receives a copy of every SIP message the server reads or writes,
// as it went over the wire (a HEP sender, for Homer). Capture must not
// block and must not keep data.
type Mirror interface {
	Capture(ipProto uint8, src, dst netip.AddrPort, t time.Time, data []byte)
}

// IP protocol numbers of what is mirrored: TLS and WebSocket go as TCP.
const (
	ipProtoUDP = 17
	ipProtoTCP = 6
)

// capture mirrors one message from src to dst. Callers check s.mirror
// first: with no mirror nothing here runs.
func (s *Stack) capture(ipProto uint8, src, dst net.Addr, data []byte) {
	if len(data) == 0 || crlfRun(data) == len(data) {
		return // keep-alives
	}
	s.opts.Mirror.Capture(ipProto, addrPort(src), addrPort(dst), time.Now(), data)
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// WriteTo is every datagram sipgo sends from the UDP socket.
func (in *udpIngress) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := in.PacketConn.WriteTo(b, addr)
	if err == nil && in.s.opts.Mirror != nil {
		in.s.capture(ipProtoUDP, in.LocalAddr(), addr, b[:n])
	}
	return n, err
}

// writeUDP sends a datagram gchd encoded itself (kept answers).
func (s *Stack) writeUDP(conn *net.UDPConn, data []byte, to netip.AddrPort) error {
	_, err := conn.WriteToUDPAddrPort(data, to)
	if err == nil && s.opts.Mirror != nil {
		s.opts.Mirror.Capture(ipProtoUDP, addrPort(conn.LocalAddr()), to, time.Now(), data)
	}
	return err
}

// Write is every message written on a TCP or TLS connection: sipgo's
// (one message per write) and the ingress's answers.
func (c *framedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && c.in.s.opts.Mirror != nil {
		c.in.s.capture(ipProtoTCP, c.LocalAddr(), c.RemoteAddr(), b[:n])
	}
	return n, err
}

// mirrorIn mirrors a message read on a TCP or TLS connection.
func (c *framedConn) mirrorIn(b []byte) {
	if c.in.s.opts.Mirror != nil {
		c.in.s.capture(ipProtoTCP, c.RemoteAddr(), c.LocalAddr(), b)
	}
}

// wsMirrorListener hands sipgo's WebSocket transport connections whose
// writes are mirrored; what sipgo reads is mirrored by its read filter
// (rateFilter), which sees each frame's payload.
type wsMirrorListener struct {
	net.Listener
	s *Server
}

func (l wsMirrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wsMirrorConn{Conn: c, s: l.s}, nil
}

// wsMirrorConn mirrors the payload of each text or binary frame the
// server writes. gobwas/ws writes a frame as its header, then its payload
// (sipgo's frames are single and unmasked): a header is remembered and
// the write of its payload mirrored.
type wsMirrorConn struct {
	net.Conn
	s       *Server
	mu      sync.Mutex
	pending int64 // the payload length of the header just written; 0: none
}

func (c *wsMirrorConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n <= 0 {
		return n, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending > 0 {
		if int64(n) == c.pending {
			c.s.capture(ipProtoTCP, c.LocalAddr(), c.RemoteAddr(), b[:n])
		}
		c.pending = 0
		return n, err
	}
	if n > ws.MaxHeaderSize {
		return n, err
	}
	h, herr := ws.ReadHeader(bytes.NewReader(b[:n]))
	if herr != nil || !h.Fin || h.Masked || (h.OpCode != ws.OpText && h.OpCode != ws.OpBinary) {
		return n, err
	}
	c.pending = h.Length
	return n, err
}

// mirrorRead mirrors what sipgo read over WebSocket (its read filter).
func (s *Stack) mirrorRead(transport string, local, remote net.Addr, data []byte) {
	if s.opts.Mirror != nil && strings.EqualFold(transport, "ws") {
		s.capture(ipProtoTCP, remote, local, data)
	}
}
