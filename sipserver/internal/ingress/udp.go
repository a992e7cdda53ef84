package ingress

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo/sip"
)

// UDP is the UDP socket as sipgo reads it. It takes REGISTER requests
// out of the stream before sipgo sees them and has them answered by the
// register workers, with the kept answers of answered standing for
// their server transactions (RFC 3261 17.2.2: a retransmission gets the
// answer again, or nothing while the first copy is processed). Every
// other request, and a REGISTER without an RFC 3261 branch, is read by
// sipgo as before.
//
// It also bounds sipgo's memory of sources. sipgo's UDP read loop enters
// every source address it reads from in its connection pool, and in a set
// of its own, and forgets them only when the loop ends: memory that grows
// with every source port and is never given back, for anyone who sends
// from many ports. So the loop is ended and started again (recycle) once
// sipgo has seen udpSourcesPerLoop new sources.
type UDP struct {
	net.PacketConn // the socket itself: sipgo writes to it directly
	in             *Ingress
	pool           func() *sip.ConnectionPool // sipgo's, of UDP sources
	parser         *sip.Parser
	workers        *registerWorkers

	// Only sipgo's read loop calls ReadFrom: these need no lock.
	last    netip.AddrPort   // source of the datagram sipgo read last
	changes int              // new sources sipgo saw in this loop
	recent  []netip.AddrPort // the last udpRecent sources, a ring
	next    int
	// keeper stands for the socket in sipgo's pool across a recycle (see
	// recycle); kept are the sources entered for it.
	keeper *sip.UDPConnection
	kept   []string
	stale  []string // sources kept over the recycle before last
	recyc  bool     // ReadFrom ended sipgo's loop to recycle it
}

// udpSourcesPerLoop is how many new sources a sipgo read loop sees
// before it is recycled, which bounds its pool and set.
// udpRecent is how many of the latest sources are carried over into the
// next loop (requests of theirs may still be on their way to sipgo's
// transaction layer, which looks their source up in the pool).
const (
	udpSourcesPerLoop = 8192
	udpRecent         = 1024
)

// errRecycle ends sipgo's UDP read loop; the server starts another.
var errRecycle = errors.New("sipgo UDP read loop recycled to forget its sources")

// UDP returns the ingress's socket as sipgo is to read it, after Start.
// tl is the transport layer of the sipgo user agent that reads it.
func (in *Ingress) UDP(tl *sip.TransportLayer) *UDP {
	return &UDP{PacketConn: in.udp, in: in, pool: func() *sip.ConnectionPool { return tl.Pool("udp") },
		parser: sip.NewParser(), workers: in.running(),
		recent: make([]netip.AddrPort, 0, udpRecent),
		keeper: &sip.UDPConnection{PacketConn: in.udp, PacketAddr: in.udp.LocalAddr().String(), Listener: true}}
}

// ReadFrom returns the next datagram that is not a REGISTER taken in.
func (u *UDP) ReadFrom(b []byte) (int, net.Addr, error) {
	if u.changes >= udpSourcesPerLoop {
		u.recycle()
		return 0, nil, errRecycle
	}
	for {
		n, addr, err := u.PacketConn.ReadFrom(b)
		if err == nil && u.in.opts.Mirror != nil {
			u.in.capture(IPProtoUDP, addr, u.LocalAddr(), b[:n])
		}
		if err != nil || !u.take(b[:n], addr) {
			if ua, ok := addr.(*net.UDPAddr); ok && err == nil {
				u.saw(ua)
			}
			return n, addr, err
		}
	}
}

// saw notes the source of a datagram handed to sipgo, which enters it in
// its pool whenever it differs from the previous one.
func (u *UDP) saw(ua *net.UDPAddr) {
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap == u.last {
		return
	}
	u.last = ap
	u.changes++
	if len(u.recent) < udpRecent {
		u.recent = append(u.recent, ap)
	} else {
		u.recent[u.next] = ap
		u.next = (u.next + 1) % udpRecent
	}
}

// recycle prepares the end of sipgo's read loop, which removes from the
// pool every source entered for the loop's connection. The latest sources
// and the socket's own address are entered for keeper first, a connection
// on the same socket that the loop does not remove: a request read just
// before the end still finds its source when its transaction is made (else
// sipgo would open a new socket to answer it), and a request sent in the
// moment between two loops finds the socket.
func (u *UDP) recycle() {
	pool := u.pool()
	u.recyc = true
	u.changes = 0
	u.last = netip.AddrPort{}
	if pool == nil {
		return
	}
	pool.Add(u.keeper.PacketAddr, u.keeper)
	fresh := make([]string, 0, len(u.recent))
	for _, ap := range u.recent {
		a := ap.String()
		pool.Add(a, u.keeper)
		fresh = append(fresh, a)
	}
	u.recent, u.next = u.recent[:0], 0
	// The sources carried over last time that sipgo has not seen since
	// still name keeper: they go now (no read loop runs while Serve
	// restarts it, see AfterRecycle).
	u.kept, fresh = fresh, u.kept
	u.stale = fresh
}

// AfterRecycle runs between two read loops: it forgets the sources kept
// over the recycle before last that are still entered for keeper (sipgo
// re-enters a source for its loop when it reads from it again).
func (u *UDP) AfterRecycle() bool {
	if !u.recyc {
		return false
	}
	u.recyc = false
	pool := u.pool()
	if pool == nil {
		return true
	}
	keep := make(map[string]bool, len(u.kept))
	for _, a := range u.kept {
		keep[a] = true
	}
	for _, a := range u.stale {
		if keep[a] {
			continue
		}
		if c := pool.Get(a); c != nil {
			c.TryClose() // Get took a reference
			if c == sip.Connection(u.keeper) {
				pool.Delete(a)
			}
		}
	}
	u.stale = nil
	return true
}

var registerLine = []byte("REGISTER ")

// take queues a REGISTER for the workers and reports whether it took the
// datagram (queued, answered again, or dropped).
func (u *UDP) take(data []byte, addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || !bytes.HasPrefix(data, registerLine) {
		return false
	}
	// The guard sipgo applies to what it reads (the server's read filter).
	if !u.in.admit(addr) {
		return true
	}
	msg, err := u.parser.ParseSIP(data) // copies: b is read into again
	if err != nil {
		return false // sipgo drops it as it drops any unparsable datagram
	}
	req, ok := msg.(*sip.Request)
	if !ok {
		return false
	}
	req.SetTransport("UDP")
	req.SetSource(ua.String()) // as sipgo writes it
	key, ok := answerKey(req)
	if !ok {
		return false
	}
	switch ans, state := u.in.answers.begin(key, time.Now()); state {
	case answerKept:
		u.in.resend(ans, req)
		return true
	case answerPending:
		return true
	}
	if !u.workers.offer(registerJob{req: req, w: &udpAnswer{in: u.in, key: key}}) {
		// Overloaded: the phone retransmits (Timer E), by when the queue
		// may have room. Answering 503 would cost what processing costs.
		u.in.answers.forget(key)
		u.in.opts.Metrics.SIPRequestDropped(string(req.Method), "overload")
	}
	return true
}

// WriteTo is every datagram sipgo sends from the UDP socket.
func (u *UDP) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := u.PacketConn.WriteTo(b, addr)
	if err == nil && u.in.opts.Mirror != nil {
		u.in.capture(IPProtoUDP, u.LocalAddr(), addr, b[:n])
	}
	return n, err
}
