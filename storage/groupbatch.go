package storage

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"gchd/chat"
)

// groupBatches lines up the updates of each chat group separately on
// PostgreSQL (chatStore.UpdateIn): those of one group share a transaction,
// one acquisition of the group's row lock and one commit, while the
// batches of different groups run at once on connections of their own.
// Posts to one group are serialised by its lock anyway; alone, each held
// it over its own commit and WAL flush.
//
// A batch locks one group and nothing else, so two nodes sharing the
// database cannot deadlock over the groups of their batches, which is why
// PostgreSQL does not share the SQLite batcher's transactions.
//
// There is no savepoint per update, which would cost two round trips and
// a subtransaction each. An update that fails before it writes (most
// refusals: not a member, no such group) leaves nothing to undo. One that
// fails after a write, or whose statement failed (which aborts a
// PostgreSQL transaction), or that panics after a write, is undone by
// rolling the transaction back and running the others again without it in
// a new one: chat.Store.UpdateIn allows that.
type groupBatches struct {
	mu     sync.Mutex
	queues map[chat.GroupID]*groupQueue
}

type groupQueue struct {
	batcher[*queuedUpdate]
	users int // callers queued or leading: the queue goes with the last
}

// acquire returns the queue of group id, counting the caller in.
func (g *groupBatches) acquire(id chat.GroupID) *groupQueue {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.queues[id]
	if q == nil {
		if g.queues == nil {
			g.queues = map[chat.GroupID]*groupQueue{}
		}
		// No pace: while a batch runs, the next gathers behind it, and a
		// lone post must not wait.
		q = &groupQueue{}
		g.queues[id] = q
	}
	q.users++
	return q
}

// release counts the caller out of the queue it acquired.
func (g *groupBatches) release(id chat.GroupID, q *groupQueue) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if q.users--; q.users == 0 {
		delete(g.queues, id)
	}
}

// updateGroup runs fn, an update that locks group id alone, in a
// transaction shared with the other updates of that group, and returns
// once that is committed (or failed).
func (db *DB) updateGroup(ctx context.Context, op string, id chat.GroupID, fn func(q queries) error) error {
	if db.engine == SQLite {
		return db.update(ctx, op, fn)
	}
	u := &queuedUpdate{ctx: ctx, fn: fn}
	q := db.groupCommits.acquire(id)
	defer db.groupCommits.release(id, q)
	q.do(u, maxGroupCommit, func(batch []*queuedUpdate) { db.runGroupBatch(ctx, op, id, batch) })
	return u.result()
}

// heldGroup is the group of a batch's transaction. It holds the group's
// row lock from before the first update, so that a failing update cannot
// be what took it; and since nobody else may change the group or its
// members meanwhile, the batch reads them with the lock, once for all its
// updates, which a post would otherwise pay two of its three round trips
// for. An update that writes either forgets what was read. (Whether a
// member has an account may change without the group's lock; a change
// shows from the next batch, as it did from the next transaction.)
type heldGroup struct {
	id      chat.GroupID
	group   *chat.Group   // nil: not known (no such group, or written since)
	members []chat.Member // nil: not known
}

// forget drops what was read of the group: an update wrote it.
func (h *heldGroup) forget() {
	if h != nil {
		h.group, h.members = nil, nil
	}
}

// groupMembersRow is a group with one of its members, or none.
type groupMembersRow struct {
	groupRow
	memberRow
	HasMember bool `db:"has_member"`
}

// lockGroup locks group id for a batch and reads it with its members, in
// one round trip: the members as Members orders them.
func (q queries) lockGroup(ctx context.Context, id chat.GroupID) (*heldGroup, error) {
	var rows []groupMembersRow
	err := q.selectAll(ctx, &rows, `SELECT g.id, g.subject, g.owner, g.created_at, g.avatar_at, g.video_at,
		       (m.login IS NOT NULL) AS has_member, g.id AS group_id, COALESCE(m.login, '') AS login,
		       COALESCE(m.display_name, '') AS display_name, COALESCE(m.status, '') AS status,
		       COALESCE(m.admin, FALSE) AS admin, COALESCE(m.since, 0) AS since, (a.login IS NOT NULL) AS has_account
		FROM chat_groups g LEFT JOIN members m ON m.group_id = g.id LEFT JOIN accounts a ON a.login = m.login
		WHERE g.id = ? ORDER BY m.since, m.login FOR UPDATE OF g`, int64(id))
	if err != nil {
		return nil, fmt.Errorf("lock group %d: %w", id, err)
	}
	h := &heldGroup{id: id}
	if len(rows) == 0 {
		return h, nil // no such group: each update finds out for itself
	}
	g := rows[0].group()
	h.group, h.members = &g, []chat.Member{}
	for _, r := range rows {
		if r.HasMember {
			h.members = append(h.members, r.member())
		}
	}
	return h, nil
}

// errUndo rolls back a batch's transaction to undo one of its updates.
var errUndo = errors.New("undo an update of the batch")

// runGroupBatch runs the updates of group id's batch in one transaction,
// and again without any one that must be undone.
func (db *DB) runGroupBatch(ctx context.Context, op string, id chat.GroupID, batch []*queuedUpdate) {
	ctx = context.WithoutCancel(ctx) // the leader's caller giving up must not undo the others
	defer func() {
		// A panic outside the updates (the driver's, say) must not leave
		// the others to report a commit that did not happen.
		if p := recover(); p != nil {
			settle(batch, fmt.Errorf("group commit: panic: %v", p))
			panic(p)
		}
	}()
	for len(batch) > 0 {
		undo, err := db.runGroupTx(ctx, op, id, batch)
		if undo == splitBatch {
			for _, u := range batch {
				u.err, u.panicked = nil, nil
				_, err := db.runGroupTx(ctx, op, id, []*queuedUpdate{u})
				settle([]*queuedUpdate{u}, err)
			}
			return
		}
		if undo < 0 {
			settle(batch, err)
			return
		}
		// The undone update keeps its outcome; the others run again.
		batch = append(batch[:undo:undo], batch[undo+1:]...)
		for _, u := range batch {
			u.err, u.panicked = nil, nil
		}
	}
}

// runGroupTx runs batch in one transaction. It returns the index of an
// update that must be undone, the transaction rolled back, or -1 and the
// transaction's error.
func (db *DB) runGroupTx(ctx context.Context, op string, id chat.GroupID, batch []*queuedUpdate) (int, error) {
	undo := -1
	err := db.inTxPrepared(ctx, op, func(q queries) error {
		q.txCtx = ctx // nor any other caller's
		// A lone update too: the group and its members in one round trip
		// instead of two.
		held, err := q.lockGroup(ctx, id)
		if err != nil {
			return err
		}
		q.held = held
		if len(batch) == 1 {
			// Its failure rolls the transaction back: nothing to track.
			return batch[0].run(q)
		}
		appends := &appendBuffer{want: len(batch)}
		q.appends = appends
		for i, u := range batch {
			var e effects
			q.effects = &e
			err := u.run(q)
			if appends.failed != nil {
				undo = splitBatch
				return appends.failed
			}
			if e.failed != nil || (err != nil && e.wrote) {
				if u.err == nil && u.panicked == nil {
					u.err = e.failed // it went on after a failed statement
				}
				undo = i
				return errUndo
			}
		}
		q.effects = nil
		if err := q.flushAppends(ctx); err != nil {
			undo = splitBatch
			return err
		}
		return nil
	})
	if undo >= 0 || undo == splitBatch {
		return undo, nil
	}
	return -1, err
}

// splitBatch is runGroupTx's answer when the batch's events failed to be
// written together: which update's event failed is not known, so each
// runs again in a transaction of its own.
const splitBatch = -2

// settle gives err to every update of batch that has no outcome of its
// own: one that succeeded is not committed.
func settle(batch []*queuedUpdate, err error) {
	if err == nil {
		return
	}
	for _, u := range batch {
		if u.err == nil && u.panicked == nil {
			u.err = err
		}
	}
}
