package storage

import (
	"sync"
	"time"
)

// batcher lines up concurrent callers so that one of them does the work of
// several (LevelDB's writer queue): the first caller in line leads, runs a
// batch of the items queued (its own first), then hands the lead to the
// next in line. Every batched call to the database goes through one: chat
// updates and the registrar's binding changes (writes), account lookups
// (reads).
type batcher[T any] struct {
	// pace spaces the batches; batchers of one resource share it.
	pace *pace
	// overlap hands the lead on as soon as the leader has taken its batch,
	// so that the next batch may run while this one does: for reads.
	// Without it batches run one at a time, as writes must.
	overlap bool

	mu    sync.Mutex
	queue []*queued[T]
}

// queued is an item in line. Whoever queued it must wait for it: the
// first in line leads the batch that takes the others.
type queued[T any] struct {
	item T
	done chan struct{} // closed when another leader's batch included it
	lead chan struct{} // signalled when it is first in line
}

// pace is the one spacing rule of batching, kept per resource: the SQLite
// writer, which chat updates and binding changes share, or the readers.
// A commit of one item pays for its transaction and its disk flush alone;
// when callers contend, a leader that waits a little takes more items
// into its batch, and each pays a share (PostgreSQL's commit_delay with
// commit_siblings works the same way).
type pace struct {
	spacing time.Duration

	mu      sync.Mutex
	last    time.Time // when the last batch began
	prev    int       // the items it took
	running int       // batches begun and not yet ended
}

// spacingWait is the rule: a new leader waits for company only while
// callers contend (the last batch took more than one item, or a batch
// still runs), and only for what is left of spacing since the last batch
// began. A quiet server runs a lone call at once, and a full batch does
// not wait.
func spacingWait(spacing time.Duration, prev, running int, full bool, sinceLast time.Duration) time.Duration {
	if spacing <= 0 || full || (prev < 2 && running == 0) {
		return 0
	}
	return max(spacing-sinceLast, 0)
}

func (p *pace) wait(full bool) time.Duration {
	if p == nil || p.spacing <= 0 {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return spacingWait(p.spacing, p.prev, p.running, full, time.Since(p.last))
}

func (p *pace) begin(n int) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.last, p.prev = time.Now(), n
	p.running++
	p.mu.Unlock()
}

func (p *pace) end() {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.running--
	p.mu.Unlock()
}

// add queues item behind every item queued before it: the batches run
// items in the order they were added. The caller must then wait for it.
func (q *batcher[T]) add(item T) *queued[T] {
	c := &queued[T]{item: item, done: make(chan struct{}), lead: make(chan struct{}, 1)}
	q.mu.Lock()
	q.queue = append(q.queue, c)
	if len(q.queue) == 1 {
		c.lead <- struct{}{}
	}
	q.mu.Unlock()
	return c
}

// wait returns once a batch including c has run: its own, if it leads,
// with up to max items, or another leader's. Results travel in the items.
// The wait is not cancelled: it lasts the batches queued ahead, each
// bounded by run.
func (q *batcher[T]) wait(c *queued[T], max int, run func(batch []T)) {
	select {
	case <-c.done:
		return
	case <-c.lead:
	}
	q.mu.Lock()
	full := len(q.queue) >= max
	q.mu.Unlock()
	if d := q.pace.wait(full); d > 0 {
		time.Sleep(d)
	}
	q.mu.Lock()
	calls := append([]*queued[T](nil), q.queue[:min(len(q.queue), max)]...)
	q.pace.begin(len(calls))
	if q.overlap {
		q.handOnLocked(len(calls))
	}
	q.mu.Unlock()

	// Hand over even if run panics: the queue must not stall behind a
	// leader that is gone.
	defer func() {
		q.pace.end()
		if !q.overlap {
			q.mu.Lock()
			q.handOnLocked(len(calls))
			q.mu.Unlock()
		}
		for _, o := range calls {
			if o != c {
				close(o.done)
			}
		}
	}()
	batch := make([]T, len(calls))
	for i, o := range calls {
		batch[i] = o.item
	}
	run(batch)
}

// do queues item and waits for it.
func (q *batcher[T]) do(item T, max int, run func(batch []T)) {
	q.wait(q.add(item), max, run)
}

// handOnLocked takes the first n calls out of the queue and signals the
// next in line that it leads.
func (q *batcher[T]) handOnLocked(n int) {
	clear(q.queue[:n])
	q.queue = q.queue[n:]
	if len(q.queue) > 0 {
		q.queue[0].lead <- struct{}{}
	}
}
