package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Why event streams end (Subscription.Take).
var (
	// ErrStreamsClosed: the service is shutting down (CloseEvents), or its
	// streams were never opened (OpenEvents). A client reconnects later.
	ErrStreamsClosed = newError(Unavailable, "event streams closed")
	// ErrSlowReader: more events waited for a subscriber than
	// maxStreamBacklog; rather than hold them all, its stream ends, and
	// the client resumes from the log (EventsFor) when it reconnects.
	ErrSlowReader = errors.New("event stream reader too slow")
)

// maxStreamBacklog bounds the events released to one subscription and not
// taken yet. A reader that keeps up takes them a write at a time; one that
// lags this far behind would otherwise hold memory without bound.
const maxStreamBacklog = 1024

// Streamed reports whether events of this kind go to live streams and
// their replay (EventsFor): group messages and notifications. A stored
// one-to-one message is a SIP matter between two users.
func (k Kind) Streamed() bool { return k != KindDirect }

// StreamedTo reports whether ev is on login's stream: the event was due to
// login (a delivery was recorded for her, as for her phones), or it is a
// message she sent herself, so that an app shows what it sent. EventsFor
// reads the log by the same rule.
func StreamedTo(ev Event, recipients []string, login string) bool {
	if !ev.Kind.Streamed() {
		return false
	}
	return (ev.Kind == KindMessage && ev.Sender == login) || slices.Contains(recipients, login)
}

// eventHub hands committed events to subscriptions in MID order, never an
// event before every lower MID is settled: on PostgreSQL two transactions
// draw MIDs 10 and 11 and may commit 11 first, and a stream that showed 11
// could not show 10 after it (clients resume after the highest id they
// saw). So every transaction that appends to the log holds a ticket from
// before it draws its first MID until it has committed or failed, and
// committed events wait until no ticket in flight could still commit a
// lower MID: the horizon. Only this process's transactions are seen.
type eventHub struct {
	mu sync.Mutex
	// open is set by OpenEvents, once the log's end is known, and cleared
	// by CloseEvents.
	open   bool
	closed bool
	// known is the highest MID drawn so far (or in the log at start): a
	// ticket taken now draws above it.
	known MID
	// released: every event up to it that this process commits has been
	// handed to the subscriptions of the moment. A new subscription gets
	// what comes after; the log has the rest.
	released MID
	tickets  map[*ticket]struct{}
	held     []heldEvent // committed above the horizon, in MID order
	subs     map[string]map[*Subscription]struct{}
}

// ticket is one transaction that appends to the log.
type ticket struct {
	floor MID // known when it was taken: what it draws is above
	first MID // the lowest MID it drew; 0 until then
}

type heldEvent struct {
	ev         *Event
	recipients []string
}

func newEventHub() *eventHub {
	return &eventHub{tickets: map[*ticket]struct{}{}, subs: map[string]map[*Subscription]struct{}{}}
}

// begin takes a ticket; the caller is about to draw a MID.
func (h *eventHub) begin() *ticket {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := &ticket{floor: h.known}
	h.tickets[t] = struct{}{}
	return t
}

// drew records a MID the ticket's transaction drew.
func (h *eventHub) drew(t *ticket, mid MID) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t.first == 0 || mid < t.first {
		t.first = mid
	}
	h.known = max(h.known, mid)
	h.releaseLocked()
}

// commit ends a ticket whose transaction committed events.
func (h *eventHub) commit(t *ticket, events []pending) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.tickets, t)
	for _, p := range events {
		if !p.ev.Kind.Streamed() {
			continue
		}
		ev := p.ev
		i, _ := slices.BinarySearchFunc(h.held, ev.MID, func(e heldEvent, mid MID) int { return cmpMID(e.ev.MID, mid) })
		h.held = slices.Insert(h.held, i, heldEvent{ev: &ev, recipients: p.recipients})
	}
	h.releaseLocked()
}

// abort ends a ticket whose transaction failed.
func (h *eventHub) abort(t *ticket) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.tickets, t)
	h.releaseLocked()
}

func cmpMID(a, b MID) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// horizonLocked is the highest MID below which nothing is in flight: a
// ticket that drew holds back its first MID and above, one that has not
// drawn yet everything above its floor.
func (h *eventHub) horizonLocked() MID {
	horizon := h.known
	for t := range h.tickets {
		limit := t.floor
		if t.first != 0 {
			limit = t.first - 1
		}
		horizon = min(horizon, limit)
	}
	return horizon
}

// releaseLocked hands the held events up to the horizon to the
// subscriptions, in MID order.
func (h *eventHub) releaseLocked() {
	horizon := h.horizonLocked()
	n := 0
	for n < len(h.held) && h.held[n].ev.MID <= horizon {
		h.fanOutLocked(h.held[n])
		n++
	}
	if n > 0 {
		clear(h.held[:n])
		h.held = h.held[n:]
	}
	h.released = max(h.released, horizon)
}

func (h *eventHub) fanOutLocked(e heldEvent) {
	if len(h.subs) == 0 {
		return
	}
	if e.ev.Kind == KindMessage && !slices.Contains(e.recipients, e.ev.Sender) {
		for sub := range h.subs[e.ev.Sender] {
			sub.push(e.ev)
		}
	}
	for _, login := range e.recipients {
		for sub := range h.subs[login] {
			sub.push(e.ev)
		}
	}
}

// Subscription is one live stream of the events on a login's stream
// (StreamedTo), from Start on. Ready signals that Take has something:
// events, or the reason the subscription ended.
type Subscription struct {
	hub   *eventHub
	login string
	start MID
	ready chan struct{}

	mu      sync.Mutex
	backlog []*Event // shared with other subscriptions: never modified
	err     error
	closed  bool
}

// Start is where the subscription begins: every event above it comes
// through Take; those up to it are in the log (EventsFor).
func (s *Subscription) Start() MID { return s.start }

// Ready is signalled when Take has events or an error.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Take returns the events released since the last Take, in MID order, and
// once the subscription has ended, why (ErrSlowReader, ErrStreamsClosed):
// then the events are what came before the end.
func (s *Subscription) Take() ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Event, len(s.backlog))
	for i, e := range s.backlog {
		out[i] = *e
	}
	clear(s.backlog)
	s.backlog = s.backlog[:0]
	if cap(s.backlog) > 64 {
		s.backlog = nil // a burst's backing array is not kept for an idle stream
	}
	return out, s.err
}

// push queues an event, or ends a subscription that lags too far.
func (s *Subscription) push(e *Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return
	}
	if len(s.backlog) >= maxStreamBacklog {
		clear(s.backlog)
		s.backlog = nil
		s.end(ErrSlowReader)
		return
	}
	s.backlog = append(s.backlog, e)
	s.signal()
}

// end records why the subscription ended; the caller holds s.mu.
func (s *Subscription) end(err error) {
	if s.err == nil {
		s.err = err
		s.signal()
	}
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default: // a wake-up is pending already
	}
}

// Close ends the subscription; it may be called more than once.
func (s *Subscription) Close() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	if set := h.subs[s.login]; set != nil {
		delete(set, s)
		if len(set) == 0 {
			delete(h.subs, s.login)
		}
	}
}

// OpenEvents starts the live event streams where the log ends now. It
// must run before the service changes anything (before serving): a
// transaction already in flight could commit below the start unseen.
func (s *Service) OpenEvents(ctx context.Context) error {
	last, err := s.store.LastMID(ctx)
	if err != nil {
		return fmt.Errorf("read the end of the event log: %w", err)
	}
	h := s.events
	h.mu.Lock()
	defer h.mu.Unlock()
	h.known = max(h.known, last)
	h.released = max(h.released, h.horizonLocked())
	h.open = !h.closed
	return nil
}

// CloseEvents ends every subscription with ErrStreamsClosed and refuses
// new ones, so that the streams' handlers return before the HTTP server
// shuts down (it waits for them).
func (s *Service) CloseEvents() {
	h := s.events
	h.mu.Lock()
	defer h.mu.Unlock()
	h.open, h.closed = false, true
	for _, set := range h.subs {
		for sub := range set {
			sub.mu.Lock()
			sub.end(ErrStreamsClosed)
			sub.mu.Unlock()
		}
	}
}

// Subscribe opens a live stream of the events on the caller's stream
// (StreamedTo). The caller Closes it.
func (s *Service) Subscribe(c Caller) (*Subscription, error) {
	h := s.events
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		return nil, ErrStreamsClosed
	}
	sub := &Subscription{hub: h, login: c.Login, start: h.released, ready: make(chan struct{}, 1)}
	set := h.subs[c.Login]
	if set == nil {
		set = map[*Subscription]struct{}{}
		h.subs[c.Login] = set
	}
	set[sub] = struct{}{}
	return sub, nil
}

// MaxEventsPage bounds one page of EventsFor.
const MaxEventsPage = 500

// EventsFor returns up to limit events of the caller's stream (StreamedTo)
// from the log, after the MID after and up to upTo, in MID order, and
// whether more follow: what a stream that resumes missed.
func (s *Service) EventsFor(ctx context.Context, c Caller, after, upTo MID, limit int) ([]Event, bool, error) {
	if limit <= 0 || limit > MaxEventsPage {
		return nil, false, invalid("limit %d is out of 1..%d", limit, MaxEventsPage)
	}
	if after >= upTo {
		return nil, false, nil
	}
	evs, err := s.store.EventsFor(ctx, c.Login, after, upTo, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("load events of %s after %d: %w", c.Login, after, err)
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}
