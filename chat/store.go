package chat

import (
	"context"
	"time"
)

// Reader is the part of the store that queries without a transaction.
// Methods return ErrNoGroup, ErrNoMessage or ErrNoMedia when the thing asked
// for does not exist; any other error is a storage failure.
type Reader interface {
	Group(ctx context.Context, id GroupID) (Group, error)
	// Members lists every member row of a group, left ones included,
	// ordered by Since then Login.
	Members(ctx context.Context, id GroupID) ([]Member, error)
	Event(ctx context.Context, mid MID) (Event, error)
	// Events lists a group's log after the given MID in MID order.
	Events(ctx context.Context, id GroupID, after MID, limit int) ([]Event, error)
	// EventsBefore lists the newest limit events of a group's log below
	// the given MID, in MID order.
	EventsBefore(ctx context.Context, id GroupID, before MID, limit int) ([]Event, error)
	// EventsFor lists the events of login's stream (StreamedTo: due to
	// login, or messages login sent) after the MID after and up to upTo, in
	// MID order.
	EventsFor(ctx context.Context, login string, after, upTo MID, limit int) ([]Event, error)
	// LastMID returns the highest MID in the log, 0 when it is empty.
	LastMID(ctx context.Context) (MID, error)
	// Receipts lists the recipients of a message with their cf and rd.
	Receipts(ctx context.Context, mid MID) ([]Receipt, error)
	// GroupsWith lists the groups in which every one of logins is an
	// active (waiting or joined) member, ordered by ID.
	GroupsWith(ctx context.Context, logins ...string) ([]Group, error)
	// GroupsOf lists the groups in which login is an active member, with
	// the end of each group's log and login's read marker and unread
	// count, ordered by ID.
	GroupsOf(ctx context.Context, login string) ([]MemberGroup, error)
	Media(ctx context.Context, id GroupID, kind MediaKind) (Media, error)
}

// Tx is one read-write transaction. Nothing it writes is visible to others
// before Store.Update returns nil.
type Tx interface {
	Reader
	// LockGroup reads a group and holds it against concurrent changes until
	// the transaction ends, so that a group's events commit in MID order.
	LockGroup(ctx context.Context, id GroupID) (Group, error)
	CreateGroup(ctx context.Context, g Group) (GroupID, error)
	UpdateGroup(ctx context.Context, g Group) error
	// DeleteGroup removes the group, its members and media, and every event
	// of its log with their deliveries and receipts, but for its DG event:
	// that stays until it has been delivered (DeliveryStore.PurgeDeleted).
	DeleteGroup(ctx context.Context, id GroupID) error
	// PutMember inserts or replaces a member row. A new row's read marker
	// starts at the group's newest event: nothing before it was due to the
	// member. A replaced row keeps its marker.
	PutMember(ctx context.Context, m Member) error
	// AppendEvent adds e to the log, records that it is due to each of
	// recipients, and returns its MID.
	AppendEvent(ctx context.Context, e Event, recipients []string) (MID, error)
	// DeleteMessage marks a message deleted, forgets its body and ends its
	// pending deliveries: nobody is to receive it any more.
	DeleteMessage(ctx context.Context, mid MID) error
	// SetReceipt records cf and rd of a recipient (a zero time leaves a
	// field as it is; an earlier value is kept) and ends its pending
	// delivery. A login the message was not due to gets no receipt.
	SetReceipt(ctx context.Context, mid MID, login string, cf, rd time.Time) error
	// SettleNotice records cf and rd as SetReceipt does for login's
	// delivery of the notification mid of group id, or of the DM that
	// announced the deletion of message mid (a DM notification carries
	// the deleted message's MID), and reports whether one was due to login.
	SettleNotice(ctx context.Context, id GroupID, mid MID, login string, cf, rd time.Time) (bool, error)
	// ReadUpTo records rd at, and cf where unset, for every live message
	// of group id above login's read marker and up to mid that was due to
	// login, ending their pending deliveries, and moves the marker up to
	// mid; it never moves back.
	ReadUpTo(ctx context.Context, id GroupID, login string, mid MID, at time.Time) error
	// ReadNewest moves login's read marker in group id up to mid when no
	// live message of another member follows mid; it never moves back.
	ReadNewest(ctx context.Context, id GroupID, login string, mid MID) error
	PutMedia(ctx context.Context, m Media) error
	// LockSender holds off the quota checks of other transactions for
	// login until this one ends, so that two operations of one account at
	// once cannot both take the last place of a quota.
	LockSender(ctx context.Context, login string) error
	// PendingFrom counts, for each of recipients, the deliveries of
	// unsolicited events (Kind.Unsolicited) from sender still pending to
	// it; a recipient with none is absent.
	PendingFrom(ctx context.Context, sender string, recipients []string) (map[string]int, error)
	// CountCreation records that login creates a group at at, forgets its
	// creations before since, and returns how many are left, this one
	// included. The record outlives the group.
	CountCreation(ctx context.Context, login string, at, since time.Time) (int, error)
	// DeleteMedia reports whether there was a file to delete.
	DeleteMedia(ctx context.Context, id GroupID, kind MediaKind) (bool, error)
}

// Store is the persistence the chat engine needs.
type Store interface {
	Reader
	// Update runs fn in one transaction and commits it when fn returns nil.
	Update(ctx context.Context, fn func(Tx) error) error
	// UpdateIn is Update for a change that locks group id and nothing
	// else (LockGroup of id; no other group, no LockSender, both of which
	// fail): the store may run it in one transaction with other changes of
	// that group, so that they share the lock and the commit, each still
	// committed or undone alone. fn may then run more than once, each time
	// in a new transaction that only the last run commits: it must keep
	// nothing of an earlier run.
	UpdateIn(ctx context.Context, id GroupID, fn func(Tx) error) error
}

// Publisher learns of every committed event and the logins it is due to.
// The delivery machinery implements it; Publish must not block for long.
type Publisher interface {
	Publish(ev Event, recipients []string)
}
