package sipserver

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"gchd/sipserver/internal/ingress"
)

// Mirror receives a copy of every SIP message the server reads or writes,
// as it went over the wire (a HEP sender, for Homer). Capture must not
// block and must not keep data.
type Mirror interface {
	Capture(ipProto uint8, src, dst netip.AddrPort, t time.Time, data []byte)
}

// capture mirrors one message from src to dst, read or written by
// sipgo's WebSocket transport (the ingress mirrors the rest). Callers
// check s.opts.Mirror first: with no mirror nothing here runs.
func (s *Stack) capture(src, dst net.Addr, data []byte) {
	if len(data) == 0 || len(bytes.Trim(data, "\r\n")) == 0 {
		return // keep-alives
	}
	s.opts.Mirror.Capture(ingress.IPProtoTCP, ingress.AddrPort(src), ingress.AddrPort(dst), time.Now(), data)
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
			c.s.capture(c.LocalAddr(), c.RemoteAddr(), b[:n])
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
		s.capture(remote, local, data)
	}
}
