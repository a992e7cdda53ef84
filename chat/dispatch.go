package chat

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// DispatchOptions tune the Dispatcher.
type DispatchOptions struct {
	// Workers bounds the deliveries in flight at once (each is one outgoing
	// SIP transaction, to every contact of one member).
	Workers int
	// Window bounds the deliveries in flight to one member. 1 (the
	// default) sends a member's deliveries one at a time: each arrives
	// after the one before it, even when that one had to be retried. More
	// pipelines them, still sent in MID order, so that one member can take
	// more than one delivery per round trip; a delivery that is retried
	// then arrives after those sent behind it (X-GC-MID orders them).
	Window int
	// AttemptTimeout bounds one attempt.
	AttemptTimeout time.Duration
	// RetryMin and RetryMax bound the exponential backoff between attempts.
	RetryMin, RetryMax time.Duration
	// Retention is how long an undelivered event is kept trying for.
	Retention time.Duration
	// BatchSize and BatchDelay bound how many settlements are written in one
	// transaction and how long one waits for company. Registrations wait
	// BatchDelay for company too, so that one read serves many.
	BatchSize  int
	BatchDelay time.Duration
	// ScanInterval is how often due retries are looked for.
	ScanInterval time.Duration
	// PurgeInterval is how often the DG events of deleted groups are
	// removed once delivered (DeliveryStore.PurgeDeleted).
	PurgeInterval time.Duration
	// CopyToSender, when set, is handed each group message once, as it is
	// published, for the sender's other devices registered now. A copy is
	// no delivery: the sender is no recipient, so it has no row and is
	// neither retried nor sent on a later registration. It must not block.
	CopyToSender func(ev Event)
	// Observe, when set, is told each attempt's outcome (delivered, retried,
	// stored, failed, expired) and, for delivered ones, the time since the
	// event was committed.
	Observe func(outcome string, n int, latency time.Duration)
}

// DefaultDispatchOptions are sensible production values.
func DefaultDispatchOptions() DispatchOptions {
	return DispatchOptions{
		Workers:        256,
		AttemptTimeout: 40 * time.Second,
		RetryMin:       2 * time.Second,
		RetryMax:       5 * time.Minute,
		Retention:      7 * 24 * time.Hour,
		BatchSize:      1000,
		BatchDelay:     5 * time.Millisecond,
		ScanInterval:   time.Second,
		PurgeInterval:  time.Minute,
	}
}

// Outcome labels for DispatchOptions.Observe.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetried   = "retried"
	OutcomeStored    = "stored"
	OutcomeFailed    = "failed"
	OutcomeExpired   = "expired"
	// OutcomeHandedOver: another node sends it (ErrElsewhere).
	OutcomeHandedOver = "handed_over"
)

// Dispatcher delivers committed events to members, reliably: every delivery
// is a row written with its event, so nothing is lost when an attempt fails
// or the process dies; the Dispatcher only moves rows along. Each member's
// deliveries go out in MID order, Window at a time; a bounded pool of
// workers serves all members. Results are written in batches.
type Dispatcher struct {
	store     DeliveryStore
	deliverer Deliverer
	opts      DispatchOptions
	log       *slog.Logger
	now       func() time.Time

	mu        sync.Mutex
	cond      *sync.Cond
	mailboxes map[string]*mailbox // by login: queued deliveries
	runnable  []*mailbox          // mailboxes that can give a worker a job
	queued    map[deliveryKey]bool
	flushes   map[string]bool // logins whose pending rows are to be loaded
	stopping  bool
	// reading counts the loads reading pending rows from the store now
	// (the loop's, and wake-ups from other nodes). Jobs forgotten
	// meanwhile go in settledDuringRead, kept until the last load ends:
	// the rows a load read may predate their settlement, and must not be
	// queued again.
	reading           int
	settledDuringRead map[deliveryKey]bool

	settle chan settleItem
	wake   chan struct{} // a flush was asked for
}

type deliveryKey struct {
	mid   MID
	login string
}

type job struct {
	ev       Event
	login    string
	attempts int
	// flushes is the mailbox's count of flushes when the job was taken:
	// a flush meanwhile may have read its row and left it to the job.
	flushes uint64
}

type mailbox struct {
	login    string
	jobs     []job // in MID order
	queued   bool  // in runnable
	inflight int   // jobs being attempted
	// sent is closed once the last job taken has been sent: the next one
	// waits for it, so that a window's jobs leave in MID order.
	sent    chan struct{}
	loading bool // a flush is loading the backlog: hold live jobs behind it
	// sleeping: the first job waits for its retry time; the jobs behind it
	// wait with it rather than overtake it.
	sleeping bool
	wakeup   *time.Timer
	// delayedFlush is FlushAfter's timer, stopped with the dispatcher.
	delayedFlush *time.Timer
	// flushes counts the member's flushes (registrations) while the
	// mailbox lives; it lives at least while a job is in flight.
	flushes uint64
}

// maxMailbox bounds the jobs one member holds in memory; beyond it they
// stay in the store only, to be loaded when the member registers.
const maxMailbox = 1000

// settleItem is a settlement on its way to the store; keep leaves the job
// in the queued set because it is still in a mailbox (a retry).
type settleItem struct {
	Settlement
	keep bool
}

// NewDispatcher returns a Dispatcher; Run starts it.
func NewDispatcher(store DeliveryStore, d Deliverer, log *slog.Logger, opts DispatchOptions) *Dispatcher {
	def := DefaultDispatchOptions()
	if opts.Workers <= 0 {
		opts.Workers = def.Workers
	}
	if opts.Window <= 0 {
		opts.Window = 1
	}
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = def.AttemptTimeout
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = def.RetryMin
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(def.RetryMax, opts.RetryMin)
	}
	if opts.Retention <= 0 {
		opts.Retention = def.Retention
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = def.BatchSize
	}
	if opts.BatchDelay <= 0 {
		opts.BatchDelay = def.BatchDelay
	}
	if opts.ScanInterval <= 0 {
		opts.ScanInterval = def.ScanInterval
	}
	if opts.PurgeInterval <= 0 {
		opts.PurgeInterval = def.PurgeInterval
	}
	d2 := &Dispatcher{
		store: store, deliverer: d, opts: opts, log: log, now: time.Now,
		mailboxes: map[string]*mailbox{},
		queued:    map[deliveryKey]bool{},
		flushes:   map[string]bool{},

		settledDuringRead: map[deliveryKey]bool{},
		settle:            make(chan settleItem, 4*opts.BatchSize),
		wake:              make(chan struct{}, 1),
	}
	d2.cond = sync.NewCond(&d2.mu)
	return d2
}

// Publish queues a committed event for its recipients. It never blocks on
// the network or the database.
func (d *Dispatcher) Publish(ev Event, recipients []string) {
	d.mu.Lock()
	stopping := d.stopping
	for _, login := range recipients {
		d.enqueueLocked(job{ev: ev, login: login})
	}
	d.mu.Unlock()
	if d.opts.CopyToSender != nil && ev.Kind == KindMessage && !stopping {
		d.opts.CopyToSender(ev)
	}
}

// Wake queues the deliveries of event mid to those of logins that are
// still pending: another node committed it and handed them over. It reads
// the rows, so that a delivery this node sent meanwhile (found by a sweep
// or a registration before the wake-up came) is not sent again. Each
// member's job goes in MID order among those queued, as wake-ups from
// several nodes need not arrive in commit order.
func (d *Dispatcher) Wake(ctx context.Context, mid MID, logins []string) error {
	ps, err := d.loadPending(func() ([]PendingDelivery, error) { return d.store.PendingOf(ctx, mid, logins) })
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range ps {
		mb := d.mailboxes[p.Login]
		if mb == nil {
			continue
		}
		if n := len(mb.jobs); n > 1 && mb.jobs[n-1].ev.MID == mid && mb.jobs[n-2].ev.MID > mid {
			slices.SortStableFunc(mb.jobs, func(a, b job) int { return cmp.Compare(a.ev.MID, b.ev.MID) })
		}
	}
	return nil
}

// Holds reports whether the dispatcher has deliveries of login in memory
// (queued, in flight, loading or waiting for a retry).
func (d *Dispatcher) Holds(login string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mailboxes[login] != nil
}

// FlushAfter is Flush with the read of the member's backlog put off by
// delay; the member's new deliveries wait behind it meanwhile. A node that
// has just become the one to send a member's deliveries uses it: others
// may hand it deliveries for a moment longer before they learn of it, and
// the backlog read after that moment holds them too, in MID order.
func (d *Dispatcher) FlushAfter(login string, delay time.Duration) {
	d.mu.Lock()
	mb := d.mailbox(login)
	mb.loading = true
	mb.flushes++
	if d.stopping {
		d.mu.Unlock()
		return
	}
	if mb.delayedFlush != nil {
		mb.delayedFlush.Stop() // the newer one reads the backlog
	}
	mb.delayedFlush = time.AfterFunc(delay, func() { d.Flush(login) })
	d.mu.Unlock()
}

// Flush asks for every pending delivery of login to be sent now, in MID
// order: the member has just registered a device.
func (d *Dispatcher) Flush(login string) {
	d.mu.Lock()
	d.flushes[login] = true
	mb := d.mailbox(login)
	mb.loading = true
	mb.flushes++
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *Dispatcher) enqueueLocked(j job) {
	if d.stopping {
		return // the row stays pending; the next start sends it
	}
	k := deliveryKey{j.ev.MID, j.login}
	if d.queued[k] {
		return
	}
	mb := d.mailbox(j.login)
	if len(mb.jobs) >= maxMailbox {
		return // it stays pending in the store; a registration loads it
	}
	d.queued[k] = true
	mb.jobs = append(mb.jobs, j)
	d.wakeLocked(mb)
}

// mailbox returns login's mailbox, creating it.
func (d *Dispatcher) mailbox(login string) *mailbox {
	mb := d.mailboxes[login]
	if mb == nil {
		mb = &mailbox{login: login}
		d.mailboxes[login] = mb
	}
	return mb
}

// wakeLocked hands a mailbox with work to the workers unless it is already
// queued for them, has its window full, waits for its backlog or sleeps
// until a retry.
func (d *Dispatcher) wakeLocked(mb *mailbox) {
	if !mb.queued && mb.inflight < d.opts.Window && !mb.loading && !mb.sleeping && len(mb.jobs) > 0 {
		mb.queued = true
		d.runnable = append(d.runnable, mb)
		d.cond.Signal()
	}
}

// Run delivers until ctx is done, then lets the attempts in flight finish
// (each bounded by AttemptTimeout, or by stopCtx when it ends first), writes
// their results and returns. Deliveries not attempted stay pending in the
// store for the next start.
func (d *Dispatcher) Run(ctx context.Context, stopCtx context.Context) {
	attemptCtx, cancelAttempts := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelAttempts()
	go func() {
		select {
		case <-stopCtx.Done():
			cancelAttempts()
		case <-attemptCtx.Done():
		}
	}()

	var workers sync.WaitGroup
	for i := 0; i < d.opts.Workers; i++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			d.work(attemptCtx)
		}()
	}
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		d.writeSettlements()
	}()
	d.loop(ctx)

	d.mu.Lock()
	d.stopping = true
	for _, mb := range d.mailboxes {
		if mb.wakeup != nil {
			mb.wakeup.Stop()
		}
		if mb.delayedFlush != nil {
			mb.delayedFlush.Stop()
		}
	}
	d.cond.Broadcast()
	d.mu.Unlock()
	workers.Wait()
	close(d.settle)
	<-writerDone
}

// loop loads flushed members' backlogs, due retries and expiries until ctx
// is done.
func (d *Dispatcher) loop(ctx context.Context) {
	scan := time.NewTicker(d.opts.ScanInterval)
	defer scan.Stop()
	expire := time.NewTicker(max(time.Minute, d.opts.ScanInterval))
	defer expire.Stop()
	purge := time.NewTicker(d.opts.PurgeInterval)
	defer purge.Stop()
	d.expire(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
			if d.opts.BatchDelay > 0 {
				select {
				case <-time.After(d.opts.BatchDelay):
				case <-ctx.Done():
					return
				}
			}
			d.loadFlushes(ctx)
		case <-scan.C:
			d.loadDue(ctx)
		case <-expire.C:
			d.expire(ctx)
		case <-purge.C:
			d.purge(ctx)
		}
	}
}

func (d *Dispatcher) loadFlushes(ctx context.Context) {
	d.mu.Lock()
	logins := make([]string, 0, len(d.flushes))
	for l := range d.flushes {
		logins = append(logins, l)
	}
	clear(d.flushes)
	d.mu.Unlock()
	if len(logins) > 1 {
		// Most registering members have nothing waiting; one read finds
		// those who do.
		with, err := d.store.WithPending(ctx, logins)
		if err == nil {
			has := make(map[string]bool, len(with))
			for _, l := range with {
				has[l] = true
			}
			for _, l := range logins {
				if !has[l] {
					d.release(l)
				}
			}
			logins = with
		} else if ctx.Err() == nil {
			d.log.Error("find members with pending deliveries", "count", len(logins), "error", err)
		}
	}
	for _, login := range logins {
		d.loadBacklog(ctx, login)
	}
}

// release ends a member's flush: the mailbox goes to the workers with
// every job, backlog and live ones, in MID order.
func (d *Dispatcher) release(login string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mb := d.mailbox(login)
	mb.loading = false
	slices.SortFunc(mb.jobs, func(a, b job) int { return cmp.Compare(a.ev.MID, b.ev.MID) })
	d.wakeLocked(mb)
	d.retireLocked(mb)
}

// loadBacklog queues a member's pending deliveries and releases the
// mailbox.
func (d *Dispatcher) loadBacklog(ctx context.Context, login string) {
	defer d.release(login)
	var after MID
	for {
		ps, err := d.loadPending(func() ([]PendingDelivery, error) { return d.store.PendingFor(ctx, login, after, 500) })
		if err != nil {
			if ctx.Err() == nil {
				d.log.Error("load pending deliveries", "login", login, "error", err)
			}
			return
		}
		if len(ps) < 500 {
			return
		}
		after = ps[len(ps)-1].Event.MID
	}
}

func (d *Dispatcher) loadDue(ctx context.Context) {
	d.mu.Lock()
	for _, mb := range d.mailboxes {
		d.retireLocked(mb)
	}
	d.mu.Unlock()
	_, err := d.loadPending(func() ([]PendingDelivery, error) { return d.store.Due(ctx, d.now(), 1000) })
	if err != nil && ctx.Err() == nil {
		d.log.Error("load due deliveries", "error", err)
	}
}

// loadPending reads pending rows with read and queues them. A row whose
// delivery was settled while the read ran is stale (the member has it
// already) and is skipped.
func (d *Dispatcher) loadPending(read func() ([]PendingDelivery, error)) ([]PendingDelivery, error) {
	d.mu.Lock()
	d.reading++
	d.mu.Unlock()
	ps, err := read()
	d.mu.Lock()
	defer d.mu.Unlock()
	defer func() {
		if d.reading--; d.reading == 0 {
			clear(d.settledDuringRead)
		}
	}()
	if err != nil {
		return nil, err
	}
	for _, p := range ps {
		if d.settledDuringRead[deliveryKey{p.Event.MID, p.Login}] {
			continue
		}
		if p.Event.Deleted {
			continue // its delivery was ended with the deletion
		}
		d.enqueueLocked(job{ev: p.Event, login: p.Login, attempts: p.Attempts})
	}
	return ps, nil
}

func (d *Dispatcher) expire(ctx context.Context) {
	n, err := d.store.Expire(ctx, d.now().Add(-d.opts.Retention))
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("expire deliveries", "error", err)
		}
		return
	}
	if n > 0 {
		d.log.Warn("undelivered events expired", "deliveries", n, "retention", d.opts.Retention)
		d.observe(OutcomeExpired, n, 0)
	}
}

// purge removes the DG events of deleted groups that every member has
// taken (or that expired): the last of a deleted group's data.
func (d *Dispatcher) purge(ctx context.Context) {
	n, err := d.store.PurgeDeleted(ctx)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Error("purge deleted groups", "error", err)
		}
		return
	}
	if n > 0 {
		d.log.Debug("deleted groups purged", "events", n)
	}
}

// next hands a worker the next runnable mailbox, or nil when stopping.
func (d *Dispatcher) next() *mailbox {
	d.mu.Lock()
	defer d.mu.Unlock()
	for len(d.runnable) == 0 && !d.stopping {
		d.cond.Wait()
	}
	if d.stopping {
		return nil
	}
	mb := d.runnable[0]
	d.runnable[0] = nil
	d.runnable = d.runnable[1:]
	mb.queued = false
	return mb
}

// take pops the mailbox's next job when its window has room; when there is
// room for more, the mailbox goes back to the workers for another to take.
// The job may be sent once after is closed; sent is to be closed when it
// has been.
func (d *Dispatcher) take(mb *mailbox) (j job, after, sent chan struct{}, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(mb.jobs) == 0 || mb.loading || mb.sleeping || mb.inflight >= d.opts.Window || d.stopping {
		d.retireLocked(mb)
		return job{}, nil, nil, false
	}
	j = mb.jobs[0]
	j.flushes = mb.flushes
	mb.jobs[0] = job{}
	mb.jobs = mb.jobs[1:]
	mb.inflight++
	if d.opts.Window > 1 {
		after, sent = mb.sent, make(chan struct{})
		mb.sent = sent
	}
	d.wakeLocked(mb)
	return j, after, sent, true
}

// finish ends a job's attempt.
func (d *Dispatcher) finish(mb *mailbox) {
	d.mu.Lock()
	mb.inflight--
	d.mu.Unlock()
}

// finishWaiting ends the attempt of a job left to wait for a registration,
// once it is out of the queued set, and reports whether the member was
// flushed meanwhile: that flush may have found the job still queued and
// skipped its row, which then needs another flush to go out now.
func (d *Dispatcher) finishWaiting(mb *mailbox, j job) (flushAgain bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mb.inflight--
	return mb.flushes != j.flushes && !d.stopping
}

// retireLocked drops a mailbox that holds nothing: no jobs, none in flight,
// no backlog being loaded.
func (d *Dispatcher) retireLocked(mb *mailbox) {
	// A worker may still hold a mailbox that another retired and a
	// newer one replaced: only the member's current one is dropped.
	if len(mb.jobs) == 0 && !mb.loading && !mb.queued && mb.inflight == 0 && !mb.sleeping && d.mailboxes[mb.login] == mb {
		delete(d.mailboxes, mb.login)
	}
}

// sleep ends a failed job's attempt: the job goes back into its mailbox in
// MID order (at the head, with a window of one), and the mailbox is kept
// from the workers until the retry time.
func (d *Dispatcher) sleep(mb *mailbox, j job, until time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	mb.inflight--
	if d.stopping {
		return
	}
	// Before the jobs that were behind it. With a window of one that is
	// the head: everything in the mailbox came after it.
	i := 0
	if d.opts.Window > 1 {
		i = slices.IndexFunc(mb.jobs, func(q job) bool { return q.ev.MID > j.ev.MID })
		if i < 0 {
			i = len(mb.jobs)
		}
	}
	mb.jobs = slices.Insert(mb.jobs, i, j)
	if mb.sleeping {
		return // an earlier failure's retry wakes it
	}
	mb.sleeping = true
	mb.wakeup = time.AfterFunc(until.Sub(d.now()), func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		mb.sleeping, mb.wakeup = false, nil
		if !d.stopping {
			d.wakeLocked(mb)
		}
	})
}

// forget drops jobs from the queued set, once their results are written
// (or there is nothing to write): until then a flush must not load the same
// rows again. written says the rows changed: a read running meanwhile may
// have returned them as they were.
func (d *Dispatcher) forget(ss []settleItem, written bool) {
	d.mu.Lock()
	for _, s := range ss {
		if !s.keep {
			k := deliveryKey{s.MID, s.Login}
			delete(d.queued, k)
			if written && d.reading > 0 {
				d.settledDuringRead[k] = true
			}
		}
	}
	d.mu.Unlock()
}

// work serves mailboxes: one member's jobs in MID order, then the next
// member. A job to be retried goes back into its mailbox, which sleeps
// until the retry: with a window of one, later jobs never overtake it.
func (d *Dispatcher) work(ctx context.Context) {
	for {
		mb := d.next()
		if mb == nil {
			return
		}
		for {
			j, after, sent, ok := d.take(mb)
			if !ok {
				break
			}
			s, write := d.attempt(ctx, j, after, sent)
			if !write || s.waiting() {
				// Waiting for a registration: the job leaves the queued
				// set before its row is written (the row stays pending,
				// and a flush must find it), and the writer leaves the
				// set alone.
				d.forget([]settleItem{{Settlement: s}}, false)
				flushAgain := d.finishWaiting(mb, j)
				if write {
					d.settle <- settleItem{Settlement: s, keep: true}
				}
				if flushAgain {
					d.Flush(j.login)
				}
				continue
			}
			if s.State == DeliveryPending {
				j.attempts = s.Attempts
				d.sleep(mb, j, s.Next)
				d.settle <- settleItem{Settlement: s, keep: true}
				break
			}
			d.finish(mb)
			d.settle <- settleItem{Settlement: s}
		}
	}
}

// attempt delivers one job and returns its settlement, and whether there is
// anything to write.
func (d *Dispatcher) attempt(ctx context.Context, j job, after, sent chan struct{}) (Settlement, bool) {
	actx, cancel := context.WithTimeout(ctx, d.opts.AttemptTimeout)
	if sent != nil {
		var once sync.Once
		markSent := func() { once.Do(func() { close(sent) }) }
		defer markSent()
		actx = context.WithValue(actx, sentKey{}, markSent)
	}
	if after != nil {
		select {
		case <-after:
		case <-actx.Done():
		}
	}
	err := d.deliverer.Deliver(actx, j.ev, j.login)
	cancel()
	now := d.now()
	s := Settlement{MID: j.ev.MID, Login: j.login, At: now, Attempts: j.attempts + 1}
	switch {
	case err == nil:
		s.State = DeliveryDone
		d.observe(OutcomeDelivered, 1, now.Sub(j.ev.Time))
	case errors.Is(err, ErrUnreachable):
		// Nothing to write: the row already waits for a registration.
		d.observe(OutcomeStored, 1, 0)
		return s, false
	case errors.Is(err, ErrElsewhere):
		// Nor here: the row waits for the node that sends it.
		d.observe(OutcomeHandedOver, 1, 0)
		return s, false
	case errors.Is(err, ErrAsleep):
		// Waits for the device's registration, with no retry time: a
		// retry would only wake it again.
		s.State = DeliveryPending
		d.log.Debug("delivery waits for a device woken by a push", "mid", j.ev.MID, "login", j.login)
		d.observe(OutcomeStored, 1, 0)
	case errors.Is(err, ErrRejected):
		s.State = DeliveryFailed
		d.log.Info("delivery rejected", "mid", j.ev.MID, "login", j.login, "error", err)
		d.observe(OutcomeFailed, 1, 0)
	default:
		s.State = DeliveryPending
		s.Next = now.Add(d.backoff(j.attempts))
		d.log.Debug("delivery will be retried", "mid", j.ev.MID, "login", j.login, "at", s.Next, "error", err)
		d.observe(OutcomeRetried, 1, 0)
	}
	return s, true
}

// backoff doubles from RetryMin up to RetryMax.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.opts.RetryMin
	for i := 0; i < attempts && b < d.opts.RetryMax; i++ {
		b *= 2
	}
	return min(b, d.opts.RetryMax)
}

// writeSettlements writes results in batches until the channel closes.
func (d *Dispatcher) writeSettlements() {
	batch := make([]settleItem, 0, d.opts.BatchSize)
	rows := make([]Settlement, 0, d.opts.BatchSize)
	flush := func() {
		if len(batch) == 0 {
			return
		}
		rows = rows[:0]
		for _, it := range batch {
			rows = append(rows, it.Settlement)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := d.store.Settle(ctx, rows); err != nil {
			// The rows stay pending: they are sent again later, which a
			// client tolerates (X-GC-MID identifies duplicates).
			d.log.Error("record delivery results", "count", len(batch), "error", err)
		}
		cancel()
		d.forget(batch, true)
		batch = batch[:0]
	}
	for {
		s, ok := <-d.settle
		if !ok {
			flush()
			return
		}
		batch = append(batch, s)
		deadline := time.NewTimer(d.opts.BatchDelay)
	collect:
		for len(batch) < d.opts.BatchSize {
			select {
			case s, ok := <-d.settle:
				if !ok {
					deadline.Stop()
					flush()
					return
				}
				batch = append(batch, s)
			case <-deadline.C:
				break collect
			}
		}
		deadline.Stop()
		flush()
	}
}

func (d *Dispatcher) observe(outcome string, n int, latency time.Duration) {
	if d.opts.Observe != nil {
		d.opts.Observe(outcome, n, latency)
	}
}

// Pending reports the store's pending deliveries and the oldest one's age.
func (d *Dispatcher) Pending(ctx context.Context) (waiting, retrying int, age time.Duration, err error) {
	c, err := d.store.PendingSummary(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	if !c.Oldest.IsZero() {
		age = d.now().Sub(c.Oldest)
	}
	return c.Waiting, c.Retrying, age, nil
}
