package sipserver

import (
	"bytes"
	"net"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Sizes of the UDP ingress. A REGISTER that adds or changes a binding
// waits for its commit (a few milliseconds), so the workers are many and
// cheap (parked goroutines); the queue absorbs a burst the size of a
// socket buffer.
const (
	ingressWorkers = 256
	ingressQueue   = 4096
)

// udpIngress is the UDP socket as sipgo reads it. It takes REGISTER
// requests out of the stream before sipgo sees them and has them answered
// by a fixed pool of workers, with the kept answers of answered standing
// for their server transactions (RFC 3261 17.2.2: a retransmission gets
// the answer again, or nothing while the first copy is processed).
//
// Through sipgo, each request costs a new goroutine, whose small stack
// then grows in the handler, a transaction with its own context and
// timer, and the transaction's key: together a fifth of the CPU of a
// REGISTER, which needs none of it (its answer is final and kept here).
// Every other request, and a REGISTER without an RFC 3261 branch, is read
// by sipgo as before.
type udpIngress struct {
	net.PacketConn // the socket itself: sipgo writes to it directly
	s              *Server
	parser         *sip.Parser
	work           chan ingressJob
	workers        sync.WaitGroup
}

// ingressJob is a REGISTER taken in, with its answer key.
type ingressJob struct {
	req *sip.Request
	key string
}

func newUDPIngress(s *Server, conn net.PacketConn) *udpIngress {
	return &udpIngress{PacketConn: conn, s: s, parser: sip.NewParser(), work: make(chan ingressJob, ingressQueue)}
}

// start starts the workers; stop, once nothing calls ReadFrom any more,
// lets them finish the queue and waits for them.
func (in *udpIngress) start() {
	for range ingressWorkers {
		in.workers.Add(1)
		go func() {
			defer in.workers.Done()
			for j := range in.work {
				in.s.serve(j.req, nil, j.key, in.s.onRegister)
			}
		}()
	}
}

func (in *udpIngress) stop() {
	close(in.work)
	in.workers.Wait()
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
	select {
	case in.work <- ingressJob{req, key}:
	default:
		// Overloaded: the phone retransmits (Timer E), by when the queue
		// may have room. Answering 503 would cost what processing costs.
		in.s.answered.forget(key)
		in.s.metrics.SIPRequestDropped(string(req.Method), "overload")
	}
	return true
}
