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
	// batches while callers contend: a leader whose predecessor ran more
	// than one item waits out the rest of it, so that more callers join
	// its batch (as the registrar's writer does, see commitDelay there).
	spacing time.Duration

	mu    sync.Mutex
	queue []queuedCall[T]
	last  time.Time // when the last batch began
	prev  int       // the items it ran
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
	if q.spacing > 0 {
		q.mu.Lock()
		wait := q.spacing - time.Since(q.last)
		if q.prev < 2 {
			wait = 0
		}
		q.mu.Unlock()
		if wait > 0 {
			time.Sleep(wait)
		}
	}
	q.mu.Lock()
	calls := append([]queuedCall[T](nil), q.queue[:min(len(q.queue), max)]...)
	q.last, q.prev = time.Now(), len(calls)
	q.mu.Unlock()

	// Hand over even if run panics: the queue must not stall behind a
	// leader that is gone.
	defer func() {
		q.mu.Lock()
		clear(q.queue[:len(calls)])
		q.queue = q.queue[len(calls):]
		if len(q.queue) > 0 {
			q.queue[0].lead <- struct{}{}
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
