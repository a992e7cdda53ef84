package sipserver

import (
	"bytes"
	"net"
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
// timer, and the transaction's key: together a fifth of the CPU of a
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
type udpIngress struct {
	net.PacketConn // the socket itself: sipgo writes to it directly
	s              *Server
	parser         *sip.Parser
	workers        *registerWorkers
}

func newUDPIngress(s *Server, conn net.PacketConn, workers *registerWorkers) *udpIngress {
	return &udpIngress{PacketConn: conn, s: s, parser: sip.NewParser(), workers: workers}
}

// ReadFrom returns the next datagram that is not a REGISTER taken in.
func (in *udpIngress) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := in.PacketConn.ReadFrom(b)
		if err != nil || !in.take(b[:n], addr) {
			return n, addr, err
		}
	}
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
