package app

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gchd/chat"
	"gchd/cluster"
	"gchd/registrar"
	"gchd/storage"
)

// Channels of the notifications between nodes (storage.DB.Notify). Each
// payload starts with a node name on a line of its own, then one item per
// line: logins are checked to hold no line breaks when accounts are made.
const (
	// bindingsChannel: "<node that wrote>\n<aor>\n<aor>...": read these
	// AORs' bindings again.
	bindingsChannel = "gchd_bindings"
	// wakeChannel: "<node to wake>\n<mid>\n<login>\n<login>...": event mid
	// is due to these members, whose deliveries that node sends.
	wakeChannel = "gchd_wake"
)

// maxPayload keeps a notification under PostgreSQL's 8000 bytes.
const maxPayload = 7000

// Intervals of the catch-up from the tables, for what a lost notification
// did not say.
const (
	// sweepInterval: the deliveries of recent events waiting for a node,
	// and the set of live nodes, are looked at this often.
	sweepInterval = time.Second
	// sweepSpan: how many sweeps a recent event is looked at in: an event
	// whose MID was drawn before another's may commit after it.
	sweepSpan = 5
	// reconcileInterval: every stored binding is read again this often,
	// for the refreshes other nodes write behind without a notification.
	reconcileInterval = 30 * time.Second
	// sendDelay: wake-ups and announcements wait this long for company,
	// so that one notification carries many.
	sendDelay = 2 * time.Millisecond
	// takeOverDelay: a registration that may make this node the one to
	// send a member's deliveries reads the member's backlog this much
	// later, when the other nodes have learnt of it and hand it what they
	// committed meanwhile; the member's deliveries wait behind the read.
	takeOverDelay = 250 * time.Millisecond
)

// nodeLink keeps this node in step with the others sharing the database:
// it announces the AORs whose bindings this node wrote, reads the others'
// announcements, hands members' deliveries to the node that sends them,
// and catches up from the tables after its listener reconnects and on a
// sweep, so that a lost notification delays and never loses. The
// notifications are hints; the tables are the truth.
type nodeLink struct {
	db         *storage.DB
	chat       chat.Reader // for the newest MID, which the sweep starts from
	bindings   *registrar.Bindings
	dispatch   *chat.Dispatcher
	membership *cluster.Membership
	self       string
	log        *slog.Logger

	mu        sync.Mutex
	announce  map[string]bool                  // AORs whose bindings this node wrote
	wakes     map[string]map[chat.MID][]string // by node, then event: members to wake it for
	outgoing  chan struct{}
	incoming  chan struct{}
	refresh   map[string]bool       // AORs another node announced
	woken     map[chat.MID][]string // events due to members whose deliveries this node sends
	caughtUp  chan struct{}
	lastLive  map[string]int64 // node → epoch at the last sweep
	recentMID [sweepSpan]chat.MID
	primed    bool // recentMID holds MIDs read
}

func newNodeLink(a *App) *nodeLink {
	l := &nodeLink{
		db: a.db, chat: a.db.ChatStore(), bindings: a.bindings, dispatch: a.dispatch, membership: a.membership,
		self: a.node, log: a.log.With("part", "cluster"),
		announce: map[string]bool{}, wakes: map[string]map[chat.MID][]string{},
		refresh: map[string]bool{}, woken: map[chat.MID][]string{},
		outgoing: make(chan struct{}, 1), incoming: make(chan struct{}, 1), caughtUp: make(chan struct{}, 1),
	}
	a.db.OnBindingsSaved(l.bindingsSaved)
	return l
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// bindingsSaved queues the AORs of a committed batch of bindings for
// announcement.
func (l *nodeLink) bindingsSaved(aors []string) {
	l.mu.Lock()
	for _, a := range aors {
		l.announce[a] = true
	}
	l.mu.Unlock()
	kick(l.outgoing)
}

// handOver queues a wake-up of node for event mid, due to login.
func (l *nodeLink) handOver(node string, mid chat.MID, login string) {
	l.mu.Lock()
	byMID := l.wakes[node]
	if byMID == nil {
		byMID = map[chat.MID][]string{}
		l.wakes[node] = byMID
	}
	byMID[mid] = append(byMID[mid], login)
	l.mu.Unlock()
	kick(l.outgoing)
}

// Run links the node until ctx is done.
func (l *nodeLink) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Add(3)
	go func() {
		defer wg.Done()
		err := l.db.Listen(ctx, []string{bindingsChannel, wakeChannel}, l.received, func() { kick(l.caughtUp) })
		if err != nil && ctx.Err() == nil {
			l.log.Error("listen for other nodes' notifications", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		l.send(ctx)
	}()
	go func() {
		defer wg.Done()
		l.apply(ctx)
	}()
	wg.Wait()
}

// received takes one notification; apply acts on it.
func (l *nodeLink) received(n storage.Notification) {
	node, rest, _ := strings.Cut(n.Payload, "\n")
	items := strings.Split(rest, "\n")
	switch n.Channel {
	case bindingsChannel:
		if node == l.self {
			return
		}
		l.mu.Lock()
		for _, aor := range items {
			if aor != "" {
				l.refresh[aor] = true
			}
		}
		l.mu.Unlock()
	case wakeChannel:
		if node != l.self || len(items) < 2 {
			return
		}
		mid, err := strconv.ParseUint(items[0], 10, 64)
		if err != nil {
			return
		}
		l.mu.Lock()
		l.woken[chat.MID(mid)] = append(l.woken[chat.MID(mid)], items[1:]...)
		l.mu.Unlock()
	}
	kick(l.incoming)
}

// send writes the queued announcements and wake-ups as notifications,
// after the commits they are about (never inside them).
func (l *nodeLink) send(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.outgoing:
		}
		select {
		case <-time.After(sendDelay):
		case <-ctx.Done():
			return
		}
		l.mu.Lock()
		aors := make([]string, 0, len(l.announce))
		for a := range l.announce {
			aors = append(aors, a)
		}
		clear(l.announce)
		wakes := l.wakes
		l.wakes = map[string]map[chat.MID][]string{}
		l.mu.Unlock()
		for _, p := range payloads(l.self, aors) {
			l.notify(ctx, bindingsChannel, p)
		}
		for node, byMID := range wakes {
			// In MID order: a node queues what it is woken for as it
			// arrives.
			for _, mid := range sortedMIDs(byMID) {
				for _, p := range payloads(node+"\n"+strconv.FormatUint(uint64(mid), 10), byMID[mid]) {
					l.notify(ctx, wakeChannel, p)
				}
			}
		}
	}
}

func (l *nodeLink) notify(ctx context.Context, channel, payload string) {
	if err := l.db.Notify(ctx, channel, payload); err != nil && ctx.Err() == nil {
		// The sweeps of the others find it within a few seconds.
		l.log.Warn("notify other nodes", "channel", channel, "error", err)
	}
}

// sortedMIDs returns the events of a wake-up set in MID order.
func sortedMIDs(m map[chat.MID][]string) []chat.MID {
	out := make([]chat.MID, 0, len(m))
	for mid := range m {
		out = append(out, mid)
	}
	slices.Sort(out)
	return out
}

// payloads splits items into notifications that each begin with head.
func payloads(head string, items []string) []string {
	var out []string
	var b strings.Builder
	for _, it := range items {
		if b.Len() > 0 && b.Len()+1+len(it) > maxPayload {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() == 0 {
			b.WriteString(head)
		}
		b.WriteByte('\n')
		b.WriteString(it)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}

// apply acts on what other nodes said, and catches up from the tables.
func (l *nodeLink) apply(ctx context.Context) {
	sweep := time.NewTicker(sweepInterval)
	defer sweep.Stop()
	reconcile := time.NewTicker(reconcileInterval)
	defer reconcile.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-l.incoming:
			l.applyNotifications(ctx)
		case <-l.caughtUp:
			// Notifications may have been lost: read everything again.
			l.reconcile(ctx)
			l.sweep(ctx, true)
		case <-reconcile.C:
			l.reconcile(ctx)
		case <-sweep.C:
			l.sweep(ctx, false)
		}
	}
}

func (l *nodeLink) applyNotifications(ctx context.Context) {
	l.mu.Lock()
	aors := make([]string, 0, len(l.refresh))
	for a := range l.refresh {
		aors = append(aors, a)
	}
	clear(l.refresh)
	woken := l.woken
	l.woken = map[chat.MID][]string{}
	l.mu.Unlock()
	if len(aors) > 0 {
		changed, err := l.bindings.Refresh(ctx, aors)
		if err != nil {
			if ctx.Err() == nil {
				l.log.Warn("read bindings other nodes changed", "count", len(aors), "error", err)
			}
			l.mu.Lock()
			for _, a := range aors {
				l.refresh[a] = true // tried again at the next notification or sweep
			}
			l.mu.Unlock()
		}
		l.flushOwned(changed)
	}
	// In MID order: each member's deliveries are queued in the order
	// they committed.
	for _, mid := range sortedMIDs(woken) {
		if err := l.dispatch.Wake(ctx, mid, woken[mid]); err != nil && ctx.Err() == nil {
			// The rows wait: the sweep or a registration brings them.
			l.log.Warn("read deliveries handed over", "mid", mid, "error", err)
		}
	}
}

// registered sends a member who registered with this node its pending
// deliveries.
func (l *nodeLink) registered(login string) { l.dispatch.FlushAfter(login, takeOverDelay) }

// flushOwned sends the pending deliveries of those of logins whose
// deliveries this node sends now: their newest flow may have become ours.
func (l *nodeLink) flushOwned(logins []string) {
	for _, login := range logins {
		if l.bindings.Owner(login) == l.self {
			l.dispatch.Flush(login)
		}
	}
}

func (l *nodeLink) reconcile(ctx context.Context) {
	changed, err := l.bindings.Reconcile(ctx)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("reconcile bindings with the database", "error", err)
		}
		return
	}
	l.flushOwned(changed)
}

// sweep finds deliveries this node sends that no wake-up brought: those
// of the last few seconds' events (all of them after a reconnection),
// and those of members whose flows were on a node that is gone.
func (l *nodeLink) sweep(ctx context.Context, all bool) {
	l.retryRefresh()
	live := map[string]int64{}
	for _, n := range l.membership.Live() {
		live[n.Name] = n.Epoch
	}
	for node, epoch := range l.lastLive {
		if e, ok := live[node]; !ok || e != epoch {
			l.flushOwned(l.bindings.OnNode(node))
		}
	}
	l.lastLive = live

	last, err := l.chat.LastMID(ctx)
	if err != nil {
		return
	}
	if !l.primed {
		l.primed = true
		l.recentMID = [sweepSpan]chat.MID{last, last, last, last, last}
	}
	low := l.recentMID[0]
	copy(l.recentMID[:], l.recentMID[1:])
	l.recentMID[sweepSpan-1] = last
	if all {
		low = 0
	}
	// Only the members whose deliveries this node sends are its to find;
	// the deliveries of offline members wait for a registration, which
	// reads them.
	// A node holding more flows than are worth naming reads for everyone
	// (nil) and keeps its own from the answer.
	var mine []string
	if here, ok := l.bindings.OnNodeUpTo(l.self, storage.MaxWaitingLogins); ok {
		mine = []string{}
		for _, login := range here {
			if l.bindings.Owner(login) == l.self && !l.dispatch.Holds(login) {
				mine = append(mine, login)
			}
		}
		if len(mine) == 0 {
			return
		}
	}
	logins, err := l.db.WaitingAfter(ctx, low, mine, 100000)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("sweep waiting deliveries", "error", err)
		}
		return
	}
	for _, login := range logins {
		if !l.dispatch.Holds(login) && l.bindings.Owner(login) == l.self {
			l.dispatch.Flush(login)
		}
	}
}

// retryRefresh has the AORs whose reading failed read again.
func (l *nodeLink) retryRefresh() {
	l.mu.Lock()
	n := len(l.refresh)
	l.mu.Unlock()
	if n > 0 {
		kick(l.incoming)
	}
}
