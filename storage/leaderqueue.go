package storage

import (
	"sync"
	"time"
)

// leaderQueue lines up concurrent callers so that one of them does the
// work of several (LevelDB's writer queue): the first caller in line leads,
// runs a batch of the items queued (its own first), then hands the lead to
// the next in line. groupCommit writes with it, accountReads reads.
type leaderQueue[T any] struct {
	// spacing, when set, is the least time between the starts of two
	// batches while callers contend: a leader waits out the rest of it
	// when the batch before ran more than one item or still runs, so that
	// more callers join its batch (as the registrar's writer does, see
	// commitDelay there), unless a full batch is waiting already.
	spacing time.Duration
	// overlap hands the lead on as soon as the leader has taken its batch,
	// so that the next batch may run while this one does: for reads.
	// Without it batches run one at a time, as writes must.
	overlap bool

	mu      sync.Mutex
	queue   []queuedCall[T]
	last    time.Time // when the last batch began
	prev    int       // the items it ran
	running int       // batches taken and not yet run
}

type queuedCall[T any] struct {
	item T
	done chan struct{} // closed when a leader's batch included it
	lead chan struct{} // signalled when it is first in line
}

// do queues item and returns once a batch including it has run: the
// caller's own, if it leads, with up to max items, or another leader's.
// Results travel in the items. The wait is not cancelled: it lasts the
// batches queued ahead, each bounded by run.
func (q *leaderQueue[T]) do(item T, max int, run func(batch []T)) {
	c := queuedCall[T]{item: item, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	q.mu.Lock()
	q.queue = append(q.queue, c)
	first := len(q.queue) == 1
	q.mu.Unlock()
	if !first {
		select {
		case <-c.done:
			return
		case <-c.lead:
		}
	}
	if wait := q.wait(max); wait > 0 {
		time.Sleep(wait)
	}
	q.mu.Lock()
	calls := append([]queuedCall[T](nil), q.queue[:min(len(q.queue), max)]...)
	q.last, q.prev = time.Now(), len(calls)
	q.running++
	if q.overlap {
		q.handOnLocked(len(calls))
	}
	q.mu.Unlock()

	// Hand over even if run panics: the queue must not stall behind a
	// leader that is gone.
	defer func() {
		q.mu.Lock()
		q.running--
		if !q.overlap {
			q.handOnLocked(len(calls))
		}
		q.mu.Unlock()
		for _, o := range calls[1:] {
			close(o.done)
		}
	}()
	batch := make([]T, len(calls))
	for i, o := range calls {
		batch[i] = o.item
	}
	run(batch)
}

// wait is how long a new leader waits before it takes its batch.
func (q *leaderQueue[T]) wait(max int) time.Duration {
	if q.spacing <= 0 {
		return 0
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if (q.prev < 2 && q.running == 0) || len(q.queue) >= max {
		return 0
	}
	return q.spacing - time.Since(q.last)
}

// handOnLocked takes the first n calls out of the queue and signals the
// next in line that it leads.
func (q *leaderQueue[T]) handOnLocked(n int) {
	clear(q.queue[:n])
	q.queue = q.queue[n:]
	if len(q.queue) > 0 {
		q.queue[0].lead <- struct{}{}
	}
}
