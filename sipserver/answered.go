package sipserver

import (
	"net"
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
	byKey map[string][]byte
	order []answeredEntry // oldest first, from head
	head  int
}

type answeredEntry struct {
	key string
	at  time.Time
}

func newAnswered(ttl time.Duration) *answered {
	return &answered{ttl: ttl, byKey: map[string][]byte{}}
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
func (a *answered) get(key string, now time.Time) ([]byte, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	b, ok := a.byKey[key]
	return b, ok
}

// put keeps an answer for ttl.
func (a *answered) put(key string, answer []byte, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	if _, ok := a.byKey[key]; !ok {
		a.order = append(a.order, answeredEntry{key: key, at: now})
	}
	a.byKey[key] = answer
}

func (a *answered) expireLocked(now time.Time) {
	for a.head < len(a.order) && now.Sub(a.order[a.head].at) >= a.ttl {
		delete(a.byKey, a.order[a.head].key)
		a.order[a.head] = answeredEntry{}
		a.head++
	}
	// Reuse the array once the expired front is its larger part.
	if a.head > 1024 && a.head > len(a.order)/2 {
		n := copy(a.order, a.order[a.head:])
		clear(a.order[n:])
		a.order = a.order[:n]
		a.head = 0
	}
}

// len returns how many answers are kept.
func (a *answered) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byKey)
}

// resend writes a kept answer to the source of a retransmitted request.
func (s *Server) resend(answer []byte, req *sip.Request) {
	addr, err := net.ResolveUDPAddr("udp", req.Source())
	if err != nil || s.udp == nil {
		return
	}
	if _, err := s.udp.WriteTo(answer, addr); err != nil {
		s.log.Debug("resend answer", "method", req.Method, "call_id", callID(req), "error", err)
	}
}
