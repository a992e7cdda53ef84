// Package ingress is the way in of the SIP server's sockets, beside sipgo.
// It reads what the UDP socket and the TCP and TLS connections carry,
// frames it, serves REGISTER requests itself (their answers are final and
// need none of sipgo's transaction machinery, and they are most of what a
// registrar receives) and hands sipgo every other byte as sipgo would have
// read it. It keeps the final answers to requests over UDP, so that a
// retransmission is answered from them rather than processed again, for
// the requests it takes in and for those sipgo handles alike.
//
// Every response the server writes on the wire goes through respond.go:
// to a request the ingress took in, to a request of a sipgo transaction,
// again to a retransmission, or relayed statelessly.
//
// The ingress does not know the server: it hands the REGISTERs it takes in
// to a Handler, and counts its refusals through Metrics.
package ingress

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/limits"
)

// Handler serves the requests the ingress takes in.
type Handler interface {
	// ServeRegister handles a REGISTER and sends its answer through w,
	// or calls w.Unanswered.
	ServeRegister(req *sip.Request, w Responder)
}

// Responder sends the answers to one request, the way it came.
type Responder interface {
	// Respond sends res. A provisional answer is dropped where no
	// transaction carries it (a request taken in gets its final answer
	// only).
	Respond(res *sip.Response) error
	// Unanswered says the request gets no answer: over UDP its
	// retransmission is processed again.
	Unanswered()
}

// Metrics counts what the ingress refuses.
type Metrics interface {
	LimitRejected(limit string)
	SIPRequestDropped(method, reason string)
}

// Mirror gets a copy of every message read and written (a HEP sender).
// Capture must not block and must not keep data.
type Mirror interface {
	Capture(ipProto uint8, src, dst netip.AddrPort, t time.Time, data []byte)
}

// IP protocol numbers of what is mirrored: TLS goes as TCP.
const (
	IPProtoUDP = 17
	IPProtoTCP = 6
)

// StreamWriteTimeout bounds a write on a connection, for sipgo's writes
// and the ingress's answers alike.
const StreamWriteTimeout = 10 * time.Second

// Options configure an ingress.
type Options struct {
	// Linger is how long the final answer to a request over UDP is kept
	// for its retransmissions (RFC 3261 Timer J).
	Linger time.Duration
	// Rate limits the messages of a source; nil: no limit. RateKey names
	// the source a message is counted against, false for one not limited.
	Rate    *limits.Rate
	RateKey func(net.Addr) (string, bool)
	Mirror  Mirror // nil: nothing mirrored
	Metrics Metrics
	Log     *slog.Logger
}

// Ingress takes REGISTERs in from the UDP socket and the stream
// listeners it wraps, and sends answers.
type Ingress struct {
	h       Handler
	opts    Options
	udp     net.PacketConn // nil: no UDP
	answers *answered

	encodeBufs sync.Pool // of *bytes.Buffer, see encoded

	mu      sync.Mutex       // guards workers and stopped
	workers *registerWorkers // nil: not started, or stopped
	stopped chan struct{}
	expiry  sync.WaitGroup
}

// New returns an ingress that hands REGISTERs to h and answers over udp
// (nil: none).
func New(h Handler, udp net.PacketConn, opts Options) *Ingress {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	return &Ingress{h: h, opts: opts, udp: udp, answers: newAnswered(opts.Linger)}
}

// Start starts the register workers and the expiry of kept answers.
func (in *Ingress) Start() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.workers != nil {
		return
	}
	in.workers = newRegisterWorkers(in.h)
	in.workers.start()
	in.stopped = make(chan struct{})
	in.expiry.Add(1)
	go func(stopped chan struct{}) {
		defer in.expiry.Done()
		in.expire(stopped)
	}(in.stopped)
}

// Stop lets the workers finish their queue and waits for them: call it
// after the readers stopped. Connections still open leave what they read
// to sipgo from then on.
func (in *Ingress) Stop() {
	in.mu.Lock()
	w := in.workers
	if w != nil {
		close(in.stopped)
		in.workers = nil // a later Start starts afresh
	}
	in.mu.Unlock()
	if w == nil {
		return
	}
	w.stop()
	in.expiry.Wait()
}

// running returns the workers, nil before Start.
func (in *Ingress) running() *registerWorkers {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.workers
}

// expire drops expired answers every second until stopped: every access
// expires too, this is for when none comes (without it the answers of a
// burst's last 32 s stayed in memory until the next request).
func (in *Ingress) expire(stopped <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stopped:
			return
		case now := <-t.C:
			in.answers.expire(now)
		}
	}
}

// capture mirrors one message from src to dst; keep-alives are not.
func (in *Ingress) capture(ipProto uint8, src, dst net.Addr, data []byte) {
	if len(data) == 0 || crlfRun(data) == len(data) {
		return
	}
	in.opts.Mirror.Capture(ipProto, AddrPort(src), AddrPort(dst), time.Now(), data)
}

// AddrPort returns the address and port of a, zero when it has none.
func AddrPort(a net.Addr) netip.AddrPort {
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

// admit counts a message of src against its rate; false: over it.
func (in *Ingress) admit(src net.Addr) bool {
	if in.opts.Rate == nil {
		return true
	}
	key, limited := in.opts.RateKey(src)
	if !limited || in.opts.Rate.Allow(key) {
		return true
	}
	in.opts.Metrics.LimitRejected("sip_rate")
	return false
}
