package chat

import (
	"context"
	"errors"
	"time"
)

// Deliverer sends one event to every reachable device of one member. It
// returns nil once a device accepted it (a 2xx), ErrUnreachable when the
// member has no device to send to (the delivery waits for a registration),
// ErrAsleep when the member's devices sleep and were asked to wake up (the
// delivery waits for their registration too), an error wrapping
// ErrRejected when every device refused it for good, and any other error
// for a failure worth retrying (timeouts, 408, 480, 503, transport errors).
//
// A Deliverer calls Sent(ctx) once the event is on its way (written to the
// network): with a window (DispatchOptions.Window) the member's next
// delivery waits for that, so that deliveries leave in MID order. Returning
// counts as sent.
type Deliverer interface {
	Deliver(ctx context.Context, ev Event, login string) error
}

type sentKey struct{}

// Sent tells the Dispatcher that the delivery attempt of ctx has sent its
// event: the member's next delivery may go.
func Sent(ctx context.Context) {
	if f, ok := ctx.Value(sentKey{}).(func()); ok {
		f()
	}
}

// Outcomes of a delivery attempt that are not plain failures.
var (
	ErrUnreachable = errors.New("no reachable contact")
	// ErrAsleep: a device did not answer and was sent a push notification
	// (RFC 8599) to register again; retrying before it does would only
	// wake it again.
	ErrAsleep = errors.New("device asleep: woken by a push, waiting for its registration")
	// ErrElsewhere: another node sends the member's deliveries (it holds
	// the member's newest flow) and was told of this one; the row waits
	// for it.
	ErrElsewhere = errors.New("the member's deliveries are another node's to send")
	ErrRejected  = errors.New("rejected by every contact")
)

// PendingDelivery is an event still due to a member.
type PendingDelivery struct {
	Event    Event
	Login    string
	Attempts int
}

// DeliveryState is the bookkeeping state of one delivery. How a store
// records it is the store's business.
type DeliveryState uint8

const (
	DeliveryPending DeliveryState = iota
	DeliveryDone
	DeliveryFailed
)

// PendingCounts describes the deliveries not done yet.
type PendingCounts struct {
	Waiting  int       // for a device to register
	Retrying int       // after a failed attempt
	Oldest   time.Time // the oldest event among them
}

// Settlement is the result of one attempt, written in batches.
type Settlement struct {
	MID   MID
	Login string
	// Done: delivered (cf set if unset). Failed: rejected for good.
	// Otherwise the delivery stays pending, retried at Next (zero: when the
	// member registers).
	State    DeliveryState
	At       time.Time
	Next     time.Time
	Attempts int
}

// waiting reports whether the settlement leaves the delivery waiting for a
// registration rather than for a retry time.
func (s Settlement) waiting() bool { return s.State == DeliveryPending && s.Next.IsZero() }

// DeliveryStore is the bookkeeping of deliveries the dispatcher needs.
type DeliveryStore interface {
	// PendingFor lists a member's pending deliveries in MID order, after
	// the given MID.
	PendingFor(ctx context.Context, login string, after MID, limit int) ([]PendingDelivery, error)
	// PendingOf lists the deliveries of event mid to those of logins that
	// are still pending.
	PendingOf(ctx context.Context, mid MID, logins []string) ([]PendingDelivery, error)
	// WithPending returns those of logins that have a pending delivery: a
	// burst of registrations costs one read, not one per member.
	WithPending(ctx context.Context, logins []string) ([]string, error)
	// Due lists pending deliveries whose retry time has come, oldest first.
	Due(ctx context.Context, now time.Time, limit int) ([]PendingDelivery, error)
	// Settle records the results of attempts in one transaction.
	Settle(ctx context.Context, s []Settlement) error
	// Expire ends the pending deliveries of events older than before and
	// returns how many it ended.
	Expire(ctx context.Context, before time.Time) (int, error)
	// PendingSummary counts pending deliveries, those waiting for a
	// registration apart from those with a retry time, and finds the oldest
	// event among them (zero when none).
	PendingSummary(ctx context.Context) (PendingCounts, error)
	// PurgeDeleted removes what is left of deleted groups, their DG events,
	// once none of their deliveries is pending, and returns how many
	// events it removed.
	PurgeDeleted(ctx context.Context) (int, error)
}
