package sipserver

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Sizes of the register workers. A REGISTER that adds or changes a
// binding waits for its commit (a few milliseconds), so the workers are
// many and cheap (parked goroutines); the queue absorbs a burst the size of
// a socket buffer.
const (
	ingressWorkers = 256
	ingressQueue   = 4096
)

// registerWorkers answer the REGISTERs that the ingresses (UDP here, TCP
// and TLS in ingress_stream.go) take out of what sipgo would read.
//
// Through sipgo, each request costs a new goroutine, whose small stack
// then grows in the handler, a transaction with its own context and
// timer, and the transaction's key: a large share of the CPU of a
// REGISTER, which needs none of it (its answer is final; over UDP it is
// kept in answered for retransmissions).
type registerWorkers struct {
	s      *Server
	mu     sync.RWMutex
	closed bool
	work   chan ingressJob
	wg     sync.WaitGroup
}

// ingressJob is a REGISTER taken in, with what its answer needs.
type ingressJob struct {
	req  *sip.Request
	key  string   // over UDP: its answer key (answered.go)
	conn net.Conn // over a connection: the connection to answer on
}

func newRegisterWorkers(s *Server) *registerWorkers {
	return &registerWorkers{s: s, work: make(chan ingressJob, ingressQueue)}
}

func (w *registerWorkers) start() {
	for range ingressWorkers {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := range w.work {
				w.s.serve(j.req, nil, j.key, j.conn, w.s.onRegister)
			}
		}()
	}
}

// offer has a job done; false when the queue is full or the workers
// stopped. A REGISTER without credentials, half of all REGISTERs, is
// answered by the caller itself: its answer is a challenge, made from
// memory without waiting on anything, and waking a worker for it cost
// more than the challenge (a handoff, a futex wake, a thread spinning for
// work).
func (w *registerWorkers) offer(j ingressJob) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	if header(j.req, "Authorization") == nil {
		w.s.serve(j.req, nil, j.key, j.conn, w.s.onRegister)
		return true
	}
	select {
	case w.work <- j:
		return true
	default:
		return false
	}
}

// stop lets the workers finish the queue and waits for them. An ingress
// that offers more afterwards (a connection still open) is refused and
// leaves the request to sipgo.
func (w *registerWorkers) stop() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.work)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

// udpIngress is the UDP socket as sipgo reads it. It takes REGISTER
// requests out of the stream before sipgo sees them and has them answered
// by the register workers, with the kept answers of answered standing for
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
type udpIngress struct {
	net.PacketConn // the socket itself: sipgo writes to it directly
	s              *Server
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

// errRecycle ends sipgo's UDP read loop; Serve starts another.
var errRecycle = errors.New("sipgo UDP read loop recycled to forget its sources")

func newUDPIngress(s *Server, conn net.PacketConn, workers *registerWorkers) *udpIngress {
	return &udpIngress{PacketConn: conn, s: s, parser: sip.NewParser(), workers: workers,
		recent: make([]netip.AddrPort, 0, udpRecent),
		keeper: &sip.UDPConnection{PacketConn: conn, PacketAddr: conn.LocalAddr().String(), Listener: true}}
}

// ReadFrom returns the next datagram that is not a REGISTER taken in.
func (in *udpIngress) ReadFrom(b []byte) (int, net.Addr, error) {
	if in.changes >= udpSourcesPerLoop {
		in.recycle()
		return 0, nil, errRecycle
	}
	for {
		n, addr, err := in.PacketConn.ReadFrom(b)
		if err == nil && in.s.opts.Mirror != nil {
			in.s.capture(ipProtoUDP, addr, in.LocalAddr(), b[:n])
		}
		if err != nil || !in.take(b[:n], addr) {
			if ua, ok := addr.(*net.UDPAddr); ok && err == nil {
				in.saw(ua)
			}
			return n, addr, err
		}
	}
}

// saw notes the source of a datagram handed to sipgo, which enters it in
// its pool whenever it differs from the previous one.
func (in *udpIngress) saw(ua *net.UDPAddr) {
	ap := ua.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if ap == in.last {
		return
	}
	in.last = ap
	in.changes++
	if len(in.recent) < udpRecent {
		in.recent = append(in.recent, ap)
	} else {
		in.recent[in.next] = ap
		in.next = (in.next + 1) % udpRecent
	}
}

// recycle prepares the end of sipgo's read loop, which removes from the
// pool every source entered for the loop's connection. The latest sources
// and the socket's own address are entered for keeper first, a connection
// on the same socket that the loop does not remove: a request read just
// before the end still finds its source when its transaction is made (else
// sipgo would open a new socket to answer it), and a request sent in the
// moment between two loops finds the socket.
func (in *udpIngress) recycle() {
	pool := in.s.ua.TransportLayer().Pool("udp")
	in.recyc = true
	in.changes = 0
	in.last = netip.AddrPort{}
	if pool == nil {
		return
	}
	pool.Add(in.keeper.PacketAddr, in.keeper)
	fresh := make([]string, 0, len(in.recent))
	for _, ap := range in.recent {
		a := ap.String()
		pool.Add(a, in.keeper)
		fresh = append(fresh, a)
	}
	in.recent, in.next = in.recent[:0], 0
	// The sources carried over last time that sipgo has not seen since
	// still name keeper: they go now (no read loop runs while Serve
	// restarts it, see afterRecycle).
	in.kept, fresh = fresh, in.kept
	in.stale = fresh
}

// afterRecycle runs between two read loops: it forgets the sources kept
// over the recycle before last that are still entered for keeper (sipgo
// re-enters a source for its loop when it reads from it again).
func (in *udpIngress) afterRecycle() bool {
	if !in.recyc {
		return false
	}
	in.recyc = false
	pool := in.s.ua.TransportLayer().Pool("udp")
	if pool == nil {
		return true
	}
	keep := make(map[string]bool, len(in.kept))
	for _, a := range in.kept {
		keep[a] = true
	}
	for _, a := range in.stale {
		if keep[a] {
			continue
		}
		if c := pool.Get(a); c != nil {
			c.TryClose() // Get took a reference
			if c == sip.Connection(in.keeper) {
				pool.Delete(a)
			}
		}
	}
	in.stale = nil
	return true
}

var registerLine = []byte("REGISTER ")

// take queues a REGISTER for the workers and reports whether it took the
// datagram (queued, answered again, or dropped).
func (in *udpIngress) take(data []byte, addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || !bytes.HasPrefix(data, registerLine) {
		return false
	}
	// The guard sipgo applies to what it reads.
	if kept, _ := in.s.rateFilter(sip.TransportReadProps{Transport: "udp", LocalAddr: in.LocalAddr(), RemoteAddr: addr}, data); len(kept) == 0 {
		return true
	}
	msg, err := in.parser.ParseSIP(data) // copies: b is read into again
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
	switch ans, state := in.s.answered.begin(key, time.Now()); state {
	case answerKept:
		in.s.resend(ans, req)
		return true
	case answerPending:
		return true
	}
	if !in.workers.offer(ingressJob{req: req, key: key}) {
		// Overloaded: the phone retransmits (Timer E), by when the queue
		// may have room. Answering 503 would cost what processing costs.
		in.s.answered.forget(key)
		in.s.metrics.SIPRequestDropped(string(req.Method), "overload")
	}
	return true
}
