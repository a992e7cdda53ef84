package sipserver

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// answered keeps, for sip.transaction_linger, the final answer to each
// request that came over UDP, encoded, so that a retransmission of the
// request gets the same answer again and is not acted on twice (RFC 3261
// 17.2.2, Timer J). The transaction itself ends as soon as it has
// answered: sipgo would keep the whole transaction (parsed request and
// response, state machine, timers: about 5 KB of pointers for the garbage
// collector to trace) for those 32 s; an encoded answer is a few hundred
// bytes the collector does not look into. INVITE transactions are left to
// sipgo (their ACK and retransmitted 2xx need it).
type answered struct {
	ttl time.Duration

	mu    sync.Mutex
	byKey map[string]answer
	order []answeredEntry // oldest first, from head
	head  int
	seq   uint64 // of the last entry
}

// answer is a final response as sent: its bytes and where they went.
type answer struct {
	data []byte
	to   netip.AddrPort
	seq  uint64 // of the order entry that expires it
}

type answeredEntry struct {
	key string
	at  time.Time
	seq uint64
}

func newAnswered(ttl time.Duration) *answered {
	return &answered{ttl: ttl, byKey: map[string]answer{}}
}

// answerKey identifies a non-INVITE server transaction over UDP as RFC 3261
// 17.2.3 matches them (branch, sent-by, method), plus the source address.
// ok is false for requests whose transaction sipgo keeps: INVITE, ACK,
// CANCEL, other transports, and RFC 2543 branches.
func answerKey(req *sip.Request) (key string, ok bool) {
	if req.Transport() != "UDP" || req.IsInvite() || req.IsAck() || req.IsCancel() {
		return "", false
	}
	via := req.Via()
	if via == nil {
		return "", false
	}
	branch, _ := via.Params.Get("branch")
	if !strings.HasPrefix(branch, sip.RFC3261BranchMagicCookie) {
		return "", false
	}
	return branch + " " + string(req.Method) + " " + via.Host + ":" + strconv.Itoa(via.Port) + " " + req.Source(), true
}

// get returns the answer kept for key.
func (a *answered) get(key string, now time.Time) (answer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	b, ok := a.byKey[key]
	return b, ok && b.data != nil
}

// What begin found for a request.
const (
	answerNone    = iota // nothing: the request is now marked in progress
	answerPending        // the request is in progress: drop the retransmission
	answerKept           // the request was answered: send the answer again
)

// begin marks the request of key in progress unless it already is, or was
// answered. It stands for the server transaction of a request that has
// none (the UDP ingress): a retransmission that arrives while the first
// copy is still being processed must not be processed a second time.
// put ends the mark with the answer, forget without one.
func (a *answered) begin(key string, now time.Time) (answer, int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	if b, ok := a.byKey[key]; ok {
		if b.data == nil {
			return b, answerPending
		}
		return b, answerKept
	}
	a.byKey[key] = answer{seq: a.enter(key, now)}
	return answer{}, answerNone
}

// forget removes the in-progress mark of a request left unanswered, so
// that its retransmission is processed.
func (a *answered) forget(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b, ok := a.byKey[key]; ok && b.data == nil {
		delete(a.byKey, key)
	}
}

// put keeps an answer for ttl. An answer that ends a mark of begin is
// kept for ttl from the mark, that is from the request's arrival: shorter
// by the time the request took, milliseconds against Timer J's 32 s.
func (a *answered) put(key string, ans answer, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	if old, ok := a.byKey[key]; ok {
		ans.seq = old.seq
	} else {
		ans.seq = a.enter(key, now)
	}
	a.byKey[key] = ans
}

// enter queues key for expiry and returns the entry's number. An entry
// expires its key only while the key holds that number: a key forgotten
// and entered again is not dropped early by its first entry.
func (a *answered) enter(key string, now time.Time) uint64 {
	a.seq++
	a.order = append(a.order, answeredEntry{key: key, at: now, seq: a.seq})
	return a.seq
}

func (a *answered) expireLocked(now time.Time) {
	for a.head < len(a.order) && now.Sub(a.order[a.head].at) >= a.ttl {
		e := a.order[a.head]
		if b, ok := a.byKey[e.key]; ok && b.seq == e.seq {
			delete(a.byKey, e.key)
		}
		a.order[a.head] = answeredEntry{}
		a.head++
	}
	if a.head == len(a.order) && a.head > 1024 {
		// All expired after a burst: give its memory back (a map does not
		// shrink) rather than hold it while idle.
		a.order, a.head = nil, 0
		if len(a.byKey) == 0 {
			a.byKey = map[string]answer{}
		}
		return
	}
	// Reuse the array once the expired front is its larger part.
	if a.head > 1024 && a.head > len(a.order)/2 {
		n := copy(a.order, a.order[a.head:])
		clear(a.order[n:])
		a.order = a.order[:n]
		a.head = 0
	}
}

// expire drops the answers older than ttl. Every access expires too; this
// is for when none comes: without it the last 32 s of a burst (150 MB
// after 100,000 registrations) stayed in memory until the next request.
func (a *answered) expire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
}

// len returns how many answers are kept.
func (a *answered) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byKey)
}

// answerUDP sends the final answer to a request with an answer key,
// keeps it for retransmissions and ends the transaction. The answer is
// encoded once and written here: handing it to the transaction would
// encode it a second time and run its state machine only to end it.
//
// The order matters. The answer is kept before the transaction ends, so a
// retransmission never reaches the handler a second time, and the
// transaction ends before the answer is sent, so a retransmission the
// answer provokes is matched against the kept answer rather than
// swallowed by a transaction that has none.
func (s *Server) answerUDP(tx sip.ServerTransaction, req *sip.Request, res *sip.Response, key string) error {
	// Where sipgo would send it: Via received/rport, else the sent-by.
	to, err := netip.ParseAddrPort(res.Destination())
	conn, ok := s.udp.(*net.UDPConn)
	if tx == nil && (err != nil || !ok) {
		// Not for a request of the ingress: its destination is its
		// source address.
		s.answered.forget(key)
		return fmt.Errorf("answer to %q over %T: %w", res.Destination(), s.udp, errors.ErrUnsupported)
	}
	if err != nil || !ok {
		// A sent-by that is a name: sipgo resolves it.
		defer tx.Terminate()
		if err := tx.Respond(res); err != nil {
			return err
		}
		if src, err := netip.ParseAddrPort(req.Source()); err == nil {
			s.answered.put(key, answer{data: s.encode(res), to: src}, time.Now())
		}
		return nil
	}
	ans := answer{data: s.encode(res), to: to}
	s.answered.put(key, ans, time.Now())
	if tx != nil {
		tx.Terminate()
	}
	_, err = conn.WriteToUDPAddrPort(ans.data, to)
	return err
}

// encode returns res as it goes on the wire, for sending and keeping. It
// is written into a pooled buffer and copied once at its final size:
// res.String() grows a builder several times and []byte() copies it again,
// a fifth of all the bytes a REGISTER allocated.
func (s *Server) encode(res *sip.Response) []byte {
	var data []byte
	s.withEncoded(res, func(b []byte) error { data = bytes.Clone(b); return nil })
	return data
}

// withEncoded calls fn with res as it goes on the wire, in a pooled
// buffer that fn must not keep.
func (s *Server) withEncoded(res *sip.Response, fn func([]byte) error) error {
	buf, _ := s.encodeBufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	res.StringWrite(buf)
	err := fn(buf.Bytes())
	s.encodeBufs.Put(buf)
	return err
}

// resend writes a kept answer again, for a retransmitted request.
func (s *Server) resend(ans answer, req *sip.Request) {
	conn, ok := s.udp.(*net.UDPConn)
	if !ok {
		return
	}
	if _, err := conn.WriteToUDPAddrPort(ans.data, ans.to); err != nil {
		s.log.Debug("resend answer", "method", req.Method, "call_id", callID(req), "error", err)
	}
}
