package sipserver

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/limits"
)

// streamWriteTimeout bounds a write on a connection, for sipgo's writes
// and the ingress's answers alike.
const streamWriteTimeout = 10 * time.Second

// Framing limits: past them the ingress leaves the connection to sipgo,
// which applies its own (a message of at most 65,535 bytes).
const (
	maxFramedHeader  = 16 << 10
	maxFramedMessage = 65535
)

// streamIngress is a TCP or TLS listener as sipgo serves it: the
// connections it accepts are read through a framer (framedConn) that takes
// whole REGISTER requests out of the stream and has the register workers
// answer them on the connection they came over, as the UDP ingress does
// for datagrams. Over a connection a REGISTER went through sipgo's
// goroutine, transaction, context and timer like any request; its answer
// needs none of them (no retransmissions on a reliable transport).
// Everything else passes to sipgo byte for byte: other requests,
// responses, keep-alives, and all of a connection's bytes from the first
// one the framer cannot delimit with certainty.
type streamIngress struct {
	net.Listener
	s         *Server
	transport string // as sipgo names it: TCP or TLS
	parser    *sip.Parser
	workers   *registerWorkers
}

func newStreamIngress(s *Server, ln net.Listener, transport string, workers *registerWorkers) *streamIngress {
	return &streamIngress{Listener: ln, s: s, transport: transport, parser: sip.NewParser(), workers: workers}
}

func (l *streamIngress) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &framedConn{Conn: c, in: l, src: c.RemoteAddr().String()}
	if r := l.s.opts.Guards.Rate; r != nil {
		if key, limited := l.s.rateKey(c.RemoteAddr()); limited {
			fc.rate, fc.rateKey = r, key
		}
	}
	return fc, nil
}

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

// framedConn is a connection as sipgo reads it, REGISTERs taken out.
// Only sipgo's read loop calls Read; the workers write answers on Conn,
// whose writes do not interleave (net.Conn and tls.Conn serialise them).
type framedConn struct {
	net.Conn
	in  *streamIngress
	src string

	pend    []byte   // bytes read, not yet framed: part of a message
	out     [][]byte // bytes framed for sipgo, in order; each chunk one read
	skip    int      // bytes of the current message still to pass
	opaque  bool     // framing gave up: everything passes
	pending error    // a read error to return once out is empty

	// The SIP rate counts each message framed here, not each read: one
	// read can carry thousands of pipelined requests. Nil rate: not limited.
	rate    *limits.Rate
	rateKey string
	atLF    bool // opaque counting: the last line ended, a blank line would end a header
}

// admit counts n messages against the source's rate: over it, the
// connection is closed, as a stream cannot go on with a message missing.
func (c *framedConn) admit(n int) error {
	if c.rate == nil {
		return nil
	}
	for ; n > 0; n-- {
		if !c.rate.Allow(c.rateKey) {
			c.in.s.metrics.LimitRejected("sip_rate")
			return errRateLimited
		}
	}
	return nil
}

// admitOpaque counts the messages of bytes that cannot be framed by the
// blank lines ending their headers (one per message; a body holding blank
// lines counts more, which only a client that cannot frame its messages
// pays).
func (c *framedConn) admitOpaque(p []byte) error {
	if c.rate == nil {
		return nil
	}
	n := 0
	for _, b := range p {
		switch {
		case b == '\n' && c.atLF:
			n++
			c.atLF = false
		case b == '\n':
			c.atLF = true
		case b == '\r' && c.atLF:
		default:
			c.atLF = false
		}
	}
	return c.admit(n)
}

// Read returns the next bytes for sipgo. After taking requests in, with
// nothing else to return, it returns 0 bytes: sipgo's loop reads again,
// renewing its idle deadline, which a connection carrying only
// REGISTERs and their answers would otherwise run out.
func (c *framedConn) Read(b []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(b, c.out[0])
			if c.out[0] = c.out[0][n:]; len(c.out[0]) == 0 {
				c.out[0] = nil
				c.out = c.out[1:]
			}
			return n, nil
		}
		if c.pending != nil {
			return 0, c.pending
		}
		n, err := c.Conn.Read(b)
		if c.opaque && len(c.pend) == 0 {
			if rerr := c.admitOpaque(b[:n]); rerr != nil {
				return 0, rerr
			}
			c.mirrorIn(b[:n])
			return n, err
		}
		took, ferr := c.frame(b[:n])
		if ferr != nil {
			return 0, ferr
		}
		if err != nil {
			c.pending = err
			continue
		}
		if took && len(c.out) == 0 {
			return 0, nil
		}
	}
}

// frame delimits what was read, queues the REGISTERs and the rest for
// sipgo, and reports whether it took any request in. data is the
// caller's buffer: whatever must outlive this read is copied.
func (c *framedConn) frame(data []byte) (took bool, err error) {
	if len(c.pend) > 0 {
		c.pend = append(c.pend, data...)
		data = c.pend
	}
	for len(data) > 0 {
		if c.opaque {
			if err := c.admitOpaque(data); err != nil {
				return took, err
			}
			c.mirrorIn(data)
			c.pass(data)
			data = nil
			break
		}
		if c.skip > 0 {
			n := min(c.skip, len(data))
			c.pass(data[:n])
			c.skip -= n
			data = data[n:]
			continue
		}
		// At a message boundary: keep-alive CRLFs (RFC 5626 3.5.1) go on
		// their own, as sipgo recognises them by a read of only CRLFs.
		if n := crlfRun(data); n > 0 {
			if n >= 4 { // a ping, which sipgo answers
				if err := c.admit(1); err != nil {
					return took, err
				}
			}
			c.out = append(c.out, bytes.Clone(data[:n]))
			data = data[n:]
			continue
		}
		if len(data) < len(registerLine) && bytes.HasPrefix(registerLine, data) {
			break // perhaps a REGISTER: wait for more
		}
		size, ok := messageSize(data)
		if !bytes.HasPrefix(data, registerLine) {
			// Passed on at once, as sipgo would have read it. When its end
			// cannot be known from what is here, framing stops: the rest
			// of the connection passes as it is read.
			if !ok || size == 0 {
				c.opaque = true
				continue
			}
			if err := c.admit(1); err != nil {
				return took, err
			}
			n := min(size, len(data))
			// A message longer than this read is mirrored as far as it
			// came in it.
			c.mirrorIn(data[:n])
			c.pass(data[:n])
			c.skip = size - n
			data = data[n:]
			continue
		}
		switch {
		case !ok:
			c.opaque = true
			continue
		case size == 0 || len(data) < size && size <= maxFramedMessage:
			// Wait for the rest: sipgo's parser would wait for it too.
		case size > maxFramedMessage:
			if err := c.admit(1); err != nil {
				return took, err
			}
			c.mirrorIn(data[:min(size, len(data))])
			c.pass(data[:min(size, len(data))])
			c.skip = size - min(size, len(data))
			data = data[min(size, len(data)):]
			continue
		default:
			if err := c.admit(1); err != nil {
				return took, err
			}
			c.mirrorIn(data[:size])
			taken, err := c.in.take(data[:size], c)
			if err != nil {
				return took, err
			}
			if taken {
				took = true
			} else {
				c.pass(data[:size])
			}
			data = data[size:]
			continue
		}
		break
	}
	if len(data) > 0 {
		c.pend = append(c.pend[:0], data...) // may move c.pend's own tail to its front
	} else {
		c.pend = nil
	}
	return took, nil
}

// pass queues bytes for sipgo, joining them to the last chunk unless that
// is a keep-alive.
func (c *framedConn) pass(p []byte) {
	if k := len(c.out) - 1; k >= 0 && crlfRun(c.out[k]) != len(c.out[k]) {
		c.out[k] = append(c.out[k], p...)
		return
	}
	c.out = append(c.out, bytes.Clone(p))
}

// crlfRun returns how many CR and LF bytes data starts with.
func crlfRun(data []byte) int {
	n := 0
	for n < len(data) && (data[n] == '\r' || data[n] == '\n') {
		n++
	}
	return n
}

// messageSize returns the size of the message data starts with, header
// and body: 0 while its header is not all in data; ok false when the
// message cannot be delimited with certainty (no blank line within
// maxFramedHeader, no Content-Length or more than one, a folded one, a
// value that is not a number), where only sipgo's parser may decide.
func messageSize(data []byte) (size int, ok bool) {
	end, sep := headerEnd(data)
	if end < 0 {
		return 0, len(data) <= maxFramedHeader
	}
	if end > maxFramedHeader {
		return 0, false
	}
	length, found := -1, false
	lines := data[:end]
	for len(lines) > 0 {
		line := lines
		if i := bytes.IndexByte(lines, '\n'); i >= 0 {
			line, lines = lines[:i], lines[i+1:]
		} else {
			lines = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if found {
				return 0, false // a folded Content-Length, or folding after it
			}
			continue
		}
		name, value, hasColon := bytes.Cut(line, []byte{':'})
		if !hasColon {
			continue // the start line
		}
		name = bytes.TrimSpace(name)
		if !strings.EqualFold(string(name), "content-length") && !strings.EqualFold(string(name), "l") {
			continue
		}
		if found {
			return 0, false
		}
		found = true
		v := bytes.TrimSpace(value)
		if len(v) == 0 || len(v) > 5 {
			return 0, false
		}
		length = 0
		for _, ch := range v {
			if ch < '0' || ch > '9' {
				return 0, false
			}
			length = length*10 + int(ch-'0')
		}
	}
	if !found {
		return 0, false
	}
	return end + sep + length, true
}

// headerEnd returns where the blank line ending the header starts (after
// the last header's line end) and its length, CRLF or a bare LF as
// sipgo's parser accepts; -1 when there is none yet.
func headerEnd(data []byte) (end, sep int) {
	crlf := bytes.Index(data, []byte("\n\r\n"))
	lf := bytes.Index(data, []byte("\n\n"))
	switch {
	case crlf < 0 && lf < 0:
		return -1, 0
	case lf < 0 || (crlf >= 0 && crlf < lf):
		return crlf + 1, 2
	default:
		return lf + 1, 1
	}
}

// take queues a REGISTER for the workers and reports whether it did; a
// REGISTER it cannot parse, or with the workers busy, is left to sipgo.
// The frame it came in was counted against the rate already.
func (l *streamIngress) take(msg []byte, c *framedConn) (bool, error) {
	m, err := l.parser.ParseSIP(msg) // copies: msg is the caller's buffer
	if err != nil {
		return false, nil
	}
	req, ok := m.(*sip.Request)
	if !ok {
		return false, nil
	}
	req.SetTransport(l.transport)
	req.SetSource(c.src)
	return l.workers.offer(ingressJob{req: req, conn: c}), nil
}

// answerStream writes a final answer on the connection a request of the
// stream ingress came over.
func (s *Server) answerStream(conn net.Conn, res *sip.Response) error {
	return s.withEncoded(res, func(b []byte) error {
		if err := conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout)); err != nil {
			return err
		}
		_, err := conn.Write(b)
		return err
	})
}
