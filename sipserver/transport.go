package sipserver

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
)

// flowListener reports every accepted connection's close: sipgo closes a
// connection on EOF, read errors and parse errors, and has no public hook.
type flowListener struct {
	net.Listener
	onClose func(raddr string)
}

func (l *flowListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	raddr := c.RemoteAddr().String()
	return &flowConn{Conn: c, onClose: func() { l.onClose(raddr) }}, nil
}

type flowConn struct {
	net.Conn
	once    sync.Once
	onClose func()
}

func (c *flowConn) Close() error {
	c.once.Do(c.onClose)
	return c.Conn.Close()
}

// quietHandler drops sipgo's own log records: what matters is logged by
// gchd with context, and sipgo logs whole hostile datagrams at ERROR.
type quietHandler struct{}

func (quietHandler) Enabled(context.Context, slog.Level) bool  { return false }
func (quietHandler) Handle(context.Context, slog.Record) error { return nil }
func (h quietHandler) WithAttrs([]slog.Attr) slog.Handler      { return h }
func (h quietHandler) WithGroup(string) slog.Handler           { return h }

// rateKey is the key of a source for the SIP rate, and false when the
// source is not limited (trusted, or no IP address to key on).
func (s *Stack) rateKey(a net.Addr) (string, bool) {
	var ip netip.Addr
	switch a := a.(type) {
	case *net.UDPAddr:
		ip = a.AddrPort().Addr()
	case *net.TCPAddr:
		ip = a.AddrPort().Addr()
	default:
		return "", false
	}
	if s.trustedIP(ip) {
		return "", false
	}
	return ip.Unmap().String(), true
}
