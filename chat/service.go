package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Limits are the configurable bounds of the domain.
type Limits struct {
	MaxParticipants int // waiting and joined members, the owner included
	MaxMessageBytes int // of one message text
	MaxAvatarBytes  int // of the avatar image and the video thumbnail
	MaxVideoBytes   int
	// MaxPendingPerSender bounds the unsolicited events (Kind.Unsolicited)
	// one account may have waiting, undelivered, for one recipient; 0: no
	// bound. A recipient who never connects otherwise collects whatever
	// anyone sends until it expires.
	MaxPendingPerSender int
	// MaxGroupsPerHour bounds the groups one account creates within any
	// hour; 0: no bound.
	MaxGroupsPerHour int
	// MaxImagePixels bounds width×height of an image before it is decoded:
	// a JPEG of a few hundred bytes can declare 65535×65535 pixels, and
	// decoding it would take gigabytes.
	MaxImagePixels int
	// MaxUploads is how many uploads may be received, checked and stored
	// at once; each holds up to its file limit in memory and a decode.
	MaxUploads int
	// UploadWait is how long an upload waits for a free slot before it is
	// refused with ErrBusy.
	UploadWait time.Duration
}

// DefaultLimits are the specification's limits (30 participants, avatars of
// 100 KB) and ours where it has none.
func DefaultLimits() Limits {
	return Limits{
		MaxParticipants: 30,
		MaxMessageBytes: 16 << 10,
		MaxAvatarBytes:  100 << 10,
		MaxVideoBytes:   16 << 20,
		MaxImagePixels:  4 << 20,
		MaxUploads:      4,
		UploadWait:      time.Second,
	}
}

// Service runs every group chat operation: it checks the rules, commits the
// change and its event in one transaction, and then hands the event to the
// live event streams (events.go) and to the Publisher for delivery.
type Service struct {
	store     Store
	publisher Publisher
	limits    Limits
	log       *slog.Logger
	// refused, when set, learns of each operation a quota refused.
	refused func(quota string)
	uploads chan struct{} // one token per upload in progress
	events  *eventHub     // the live event streams
}

// Option configures a Service.
type Option func(*Service)

// WithPublisher sets who learns of committed events (the delivery machinery).
func WithPublisher(p Publisher) Option { return func(s *Service) { s.publisher = p } }

// WithLimits replaces DefaultLimits.
func WithLimits(l Limits) Option { return func(s *Service) { s.limits = l } }

// WithQuotaObserver sets who learns of each operation refused by a quota,
// by the quota's name (QuotaPending, QuotaGroups): the metrics.
func WithQuotaObserver(f func(quota string)) Option { return func(s *Service) { s.refused = f } }

// WithLogger sets the logger.
func WithLogger(l *slog.Logger) Option { return func(s *Service) { s.log = l } }

// NewService returns a Service over store.
func NewService(store Store, opts ...Option) *Service {
	s := &Service{
		store:  store,
		limits: DefaultLimits(),
		log:    slog.New(slog.DiscardHandler),
		events: newEventHub(),
	}
	for _, o := range opts {
		o(s)
	}
	s.uploads = make(chan struct{}, max(s.limits.MaxUploads, 1))
	return s
}

// clock returns the current time in UTC with microsecond precision, the
// precision both storage engines keep.
func (s *Service) clock() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// pending is an event committed by a transaction, waiting to be published.
type pending struct {
	ev         Event
	recipients []string
}

// change is the body of an Update: it loads, checks, writes and records the
// events to publish once the transaction has committed.
type change struct {
	tx     Tx
	events []pending
	hub    *eventHub
	// ticket is taken before the first MID is drawn and outlives a
	// transaction the store runs again: what the first run drew may still
	// be in flight (eventHub).
	ticket **ticket
}

type sourceKey struct{}

// WithSource tells the service through which face (http, sip) the
// operations of ctx come, for the events' Source.
func WithSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, sourceKey{}, source)
}

// emit appends an event to the log and records its deliveries.
func (c *change) emit(ctx context.Context, ev Event, recipients []string) (MID, error) {
	ev.Source, _ = ctx.Value(sourceKey{}).(string)
	if *c.ticket == nil {
		*c.ticket = c.hub.begin()
	}
	mid, err := c.tx.AppendEvent(ctx, ev, recipients)
	if err != nil {
		return 0, fmt.Errorf("append %s event: %w", ev.Kind, err)
	}
	c.hub.drew(*c.ticket, mid)
	ev.MID = mid
	c.events = append(c.events, pending{ev: ev, recipients: recipients})
	return mid, nil
}

// update runs fn in one transaction and publishes its events after commit,
// never before: a delivery must not announce what could still roll back.
// The streams' ticket ends either way, so that later events are not held
// back for it.
func (s *Service) update(ctx context.Context, fn func(*change) error) error {
	return s.transact(ctx, s.store.Update, fn)
}

// updateIn is update for a change that locks group id and nothing else
// (Store.UpdateIn): the store may batch it with the group's other changes.
// A change runs again after a neighbour's failure as it does after its
// own: it starts afresh each time, only its ticket kept.
func (s *Service) updateIn(ctx context.Context, id GroupID, fn func(*change) error) error {
	return s.transact(ctx, func(ctx context.Context, body func(Tx) error) error {
		return s.store.UpdateIn(ctx, id, body)
	}, fn)
}

// transact runs fn through run, one of the store's updates.
func (s *Service) transact(ctx context.Context, run func(context.Context, func(Tx) error) error, fn func(*change) error) error {
	var (
		c         change
		tk        *ticket
		committed bool
	)
	defer func() {
		// A failure, or a panic: nothing of the ticket is to be released.
		if tk != nil && !committed {
			s.events.abort(tk)
		}
	}()
	err := run(ctx, func(tx Tx) error {
		c = change{tx: tx, hub: s.events, ticket: &tk}
		return fn(&c)
	})
	if err != nil {
		return err
	}
	if tk != nil {
		s.events.commit(tk, c.events)
		committed = true
	}
	if s.publisher != nil {
		for _, p := range c.events {
			s.publisher.Publish(p.ev, p.recipients)
		}
	}
	return nil
}

// groupState is a locked group with its members and the caller's row.
type groupState struct {
	group   Group
	members []Member
	me      Member
}

// member returns the row of login, if any.
func (g *groupState) member(login string) (Member, bool) {
	for _, m := range g.members {
		if m.Login == login {
			return m, true
		}
	}
	return Member{}, false
}

// count returns how many members satisfy keep.
func (g *groupState) count(keep func(Member) bool) int {
	n := 0
	for _, m := range g.members {
		if keep(m) {
			n++
		}
	}
	return n
}

// logins lists the members with an account that satisfy keep: guests have
// nobody to deliver to.
func (g *groupState) logins(keep func(Member) bool) []string {
	var out []string
	for _, m := range g.members {
		if m.HasAccount && keep(m) {
			out = append(out, m.Login)
		}
	}
	return out
}

// put writes a member row and keeps the in-memory copy in step.
func (g *groupState) put(ctx context.Context, tx Tx, m Member) error {
	if err := tx.PutMember(ctx, m); err != nil {
		return fmt.Errorf("write member %s: %w", m.Login, err)
	}
	for i := range g.members {
		if g.members[i].Login == m.Login {
			g.members[i] = m
			if m.Login == g.me.Login {
				g.me = m
			}
			return nil
		}
	}
	g.members = append(g.members, m)
	return nil
}

// lock loads a group for the caller, locked against concurrent changes when
// exclusive is set (every change of the group or its log needs that; a
// receipt does not). It fails with ErrNoGroup or ErrNotMember; callers check
// roles and statuses themselves.
func (s *Service) lock(ctx context.Context, tx Tx, id GroupID, caller string, exclusive bool) (*groupState, error) {
	read := tx.Group
	if exclusive {
		read = tx.LockGroup
	}
	g, err := read(ctx, id)
	if err != nil {
		return nil, err
	}
	members, err := tx.Members(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load members of %d: %w", id, err)
	}
	st := &groupState{group: g, members: members}
	me, ok := st.member(caller)
	if !ok {
		return nil, ErrNotMember
	}
	st.me = me
	return st, nil
}

// requireAdmin fails with ErrNotAllowed unless the caller is a joined admin.
func requireAdmin(st *groupState) error {
	if st.me.Status != StatusJoined || !st.me.Admin {
		return ErrNotAllowed
	}
	return nil
}

// requireJoined fails unless the caller has joined: ErrNotJoined for a
// waiting or left member.
func requireJoined(st *groupState) error {
	if st.me.Status != StatusJoined {
		return ErrNotJoined
	}
	return nil
}

func isJoined(m Member) bool { return m.Status == StatusJoined }
func isActive(m Member) bool { return m.Status.Active() }

// displayName picks the dn to record: the one given with the request, else
// the account's, else the login.
func displayName(given string, c Caller) string {
	if given != "" {
		return given
	}
	if c.DisplayName != "" {
		return c.DisplayName
	}
	return c.Login
}

// lockQuotas serialises c's quota checks with its other operations in
// flight, when any quota is on.
func (s *Service) lockQuotas(ctx context.Context, tx Tx, login string) error {
	if s.limits.MaxPendingPerSender <= 0 && s.limits.MaxGroupsPerHour <= 0 {
		return nil
	}
	if err := tx.LockSender(ctx, login); err != nil {
		return fmt.Errorf("lock quotas of %s: %w", login, err)
	}
	return nil
}

// checkPending refuses with ErrPendingQuota when sender has
// MaxPendingPerSender unsolicited events waiting for one of recipients
// already. The caller holds lockQuotas.
func (s *Service) checkPending(ctx context.Context, tx Tx, sender string, recipients []string) error {
	if s.limits.MaxPendingPerSender <= 0 {
		return nil
	}
	others := make([]string, 0, len(recipients))
	for _, l := range recipients {
		if l != sender {
			others = append(others, l)
		}
	}
	if len(others) == 0 {
		return nil
	}
	n, err := tx.PendingFrom(ctx, sender, others)
	if err != nil {
		return fmt.Errorf("count pending from %s: %w", sender, err)
	}
	for _, l := range others {
		if n[l] >= s.limits.MaxPendingPerSender {
			return fmt.Errorf("%w: %s has %d waiting from %s, at most %d", ErrPendingQuota, l, n[l], sender, s.limits.MaxPendingPerSender)
		}
	}
	return nil
}

// checkCreation records a group creation by login and refuses with
// ErrGroupQuota when it is over MaxGroupsPerHour within the last hour. The
// caller holds lockQuotas; a refusal rolls the record back with the rest.
func (s *Service) checkCreation(ctx context.Context, tx Tx, login string, now time.Time) error {
	if s.limits.MaxGroupsPerHour <= 0 {
		return nil
	}
	n, err := tx.CountCreation(ctx, login, now, now.Add(-time.Hour))
	if err != nil {
		return fmt.Errorf("count groups created by %s: %w", login, err)
	}
	if n > s.limits.MaxGroupsPerHour {
		return fmt.Errorf("%w: %s created %d within the hour, at most %d", ErrGroupQuota, login, n-1, s.limits.MaxGroupsPerHour)
	}
	return nil
}

// observeQuota tells the quota observer of a refusal and returns err.
func (s *Service) observeQuota(err error) error {
	if s.refused == nil || err == nil {
		return err
	}
	switch {
	case errors.Is(err, ErrPendingQuota):
		s.refused(QuotaPending)
	case errors.Is(err, ErrGroupQuota):
		s.refused(QuotaGroups)
	}
	return err
}
