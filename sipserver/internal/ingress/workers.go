package ingress

import (
	"strings"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// Sizes of the register workers. A REGISTER that adds or changes a
// binding waits for its commit (a few milliseconds), so the workers are
// many and cheap (parked goroutines); the queue absorbs a burst the size of
// a socket buffer.
const (
	registerWorkerCount = 256
	registerQueue       = 4096
)

// registerWorkers answer the REGISTERs that the readers (udp.go,
// stream.go) take out of what sipgo would read.
//
// Through sipgo, each request costs a new goroutine, whose small stack
// then grows in the handler, a transaction with its own context and
// timer, and the transaction's key: a large share of the CPU of a
// REGISTER, which needs none of it (its answer is final; over UDP it is
// kept in answered for retransmissions).
type registerWorkers struct {
	h      Handler
	mu     sync.RWMutex
	closed bool
	work   chan registerJob
	wg     sync.WaitGroup
}

// registerJob is a REGISTER taken in, and where its answer goes.
type registerJob struct {
	req *sip.Request
	w   Responder
}

func newRegisterWorkers(h Handler) *registerWorkers {
	return &registerWorkers{h: h, work: make(chan registerJob, registerQueue)}
}

func (w *registerWorkers) start() {
	for range registerWorkerCount {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			for j := range w.work {
				w.h.ServeRegister(j.req, j.w)
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
func (w *registerWorkers) offer(j registerJob) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	if !hasHeader(j.req, "Authorization") {
		w.h.ServeRegister(j.req, j.w)
		return true
	}
	select {
	case w.work <- j:
		return true
	default:
		return false
	}
}

// stop lets the workers finish the queue and waits for them. A reader
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

// hasHeader reports whether req has a header named name, in any case,
// without the allocation of sipgo's lookup.
func hasHeader(req *sip.Request, name string) bool {
	for _, h := range req.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return true
		}
	}
	return false
}
