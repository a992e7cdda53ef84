package storage

import "sync"

// leaderQueue lines up concurrent callers so that one of them does the
// work of several (LevelDB's writer queue): the first caller in line leads,
// runs a batch of the items queued (its own first), then hands the lead to
// the next in line. groupCommit writes with it, accountReads reads.
type leaderQueue[T any] struct {
	mu    sync.Mutex
	queue []queuedCall[T]
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
	q.mu.Lock()
	calls := append([]queuedCall[T](nil), q.queue[:min(len(q.queue), max)]...)
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
