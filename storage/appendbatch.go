package storage

import (
	"context"
	"fmt"

	"github.com/lib/pq"

	"gchd/chat"
)

// appendBuffer holds the events that the updates of one group's batch
// append on PostgreSQL (groupbatch.go), with their deliveries, until one
// statement writes them all: the batch's transaction holds the group's
// lock meanwhile, so every round trip in it is time the group's other
// posts wait, and a post's insert was the round trip left per post.
//
// An event needs its MID when it is appended (the caller returns it), so
// the first append draws a block of MIDs, one per update of the batch,
// under the group's lock: MID order stays commit order in the group. MIDs
// of the block that no event takes are skipped, as those of a rolled back
// transaction are.
//
// Anything else the transaction runs writes the buffer first
// (queries.prepared), so no statement of the batch misses an event of an
// earlier update.
type appendBuffer struct {
	want  int     // MIDs to draw: the batch's updates
	drawn bool    // the block was drawn (an append past it is not buffered)
	mids  []int64 // drawn, not taken yet, ascending

	evMID, evGroup, evRef, evTime                  []int64
	evKind, evSender, evDN, evBody, evOrigin, evCT []string
	dvMID                                          []int64
	dvLogin, dvSender                              []string

	// failed is the error of writing the buffer: the batch runs again
	// update by update, since it cannot tell whose event failed.
	failed error
}

// take draws the block if need be and returns the next MID of it; false
// when the block is used up.
func (b *appendBuffer) take(ctx context.Context, q queries) (int64, bool, error) {
	if !b.drawn {
		b.drawn = true
		var mids []int64
		if err := q.selectAll(ctx, &mids, "SELECT nextval('events_mid_seq') FROM generate_series(1, CAST(? AS int))", b.want); err != nil {
			return 0, false, fmt.Errorf("draw %d MIDs: %w", b.want, err)
		}
		b.mids = mids
	}
	if len(b.mids) == 0 {
		return 0, false, nil
	}
	mid := b.mids[0]
	b.mids = b.mids[1:]
	return mid, true, nil
}

// add buffers event e, given MID mid, and its deliveries.
func (b *appendBuffer) add(mid int64, e chat.Event, ct string, recipients []string, quotaSender string) {
	b.evMID = append(b.evMID, mid)
	b.evGroup = append(b.evGroup, int64(e.Group))
	b.evRef = append(b.evRef, int64(e.Ref))
	b.evTime = append(b.evTime, micros(e.Time))
	b.evKind = append(b.evKind, string(e.Kind))
	b.evSender = append(b.evSender, e.Sender)
	b.evDN = append(b.evDN, e.SenderDN)
	b.evBody = append(b.evBody, eventBody(e))
	b.evOrigin = append(b.evOrigin, e.Origin)
	b.evCT = append(b.evCT, ct)
	for _, l := range recipients {
		sender := quotaSender
		if l == e.Sender {
			sender = ""
		}
		b.dvMID = append(b.dvMID, mid)
		b.dvLogin = append(b.dvLogin, l)
		b.dvSender = append(b.dvSender, sender)
	}
}

// appendBatchSQL writes buffered events and their deliveries in one
// statement (the deliveries' foreign key is checked at its end).
const appendBatchSQL = `WITH e AS (
		INSERT INTO events (mid, group_id, kind, sender, sender_dn, body, ref, created_at, origin, content_type)
		SELECT * FROM unnest(CAST(? AS bigint[]), CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS text[]), CAST(? AS text[]),
			CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS text[])))
	INSERT INTO deliveries (mid, login, sender)
	SELECT * FROM unnest(CAST(? AS bigint[]), CAST(? AS text[]), CAST(? AS text[]))`

// flushAppends writes what q's buffer holds, if anything.
func (q queries) flushAppends(ctx context.Context) error {
	b := q.appends
	if b == nil || len(b.evMID) == 0 {
		return nil
	}
	if b.failed != nil {
		return b.failed
	}
	args := []any{pq.Array(b.evMID), pq.Array(b.evGroup), pq.Array(b.evKind), pq.Array(b.evSender), pq.Array(b.evDN),
		pq.Array(b.evBody), pq.Array(b.evRef), pq.Array(b.evTime), pq.Array(b.evOrigin), pq.Array(b.evCT),
		pq.Array(b.dvMID), pq.Array(b.dvLogin), pq.Array(b.dvSender)}
	b.evMID, b.evGroup, b.evRef, b.evTime = nil, nil, nil, nil
	b.evKind, b.evSender, b.evDN, b.evBody, b.evOrigin, b.evCT = nil, nil, nil, nil, nil, nil
	b.dvMID, b.dvLogin, b.dvSender = nil, nil, nil
	// Neither the buffer (it is empty now) nor the update whose
	// statement came next is concerned: a failure is the batch's.
	w := q
	w.appends, w.effects = nil, nil
	if _, err := w.exec(ctx, appendBatchSQL, args...); err != nil {
		b.failed = fmt.Errorf("write the batch's events: %w", err)
		return b.failed
	}
	return nil
}
