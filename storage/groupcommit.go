package storage

import (
	"context"
	"fmt"
)

// maxGroupCommit bounds how many updates share one transaction, so that
// the first of them does not wait for an unbounded queue.
const maxGroupCommit = 64

// groupCommit runs concurrent chat updates in one write transaction with
// one commit (LevelDB's writer queue). SQLite has one writer, so they would
// run one after another anyway, each paying for its own commit and disk
// flush; a post to a busy group waited mostly for other posts' flushes.
// Each update runs inside its own savepoint: one that fails or panics is
// undone alone, and the others commit. When the commit fails, every update
// of the batch gets the error and none is written.
//
// PostgreSQL runs updates concurrently on its own connections instead:
// there, gchd nodes sharing the database could lock two groups of one
// batch in opposite orders and deadlock, and each savepoint would cost a
// round trip. It batches only the updates of one group (groupbatch.go).
type groupCommit = batcher[*queuedUpdate]

type queuedUpdate struct {
	ctx      context.Context
	fn       func(q queries) error
	err      error
	panicked any
}

// update runs fn in a shared transaction and returns once that is
// committed (or failed). The first caller in the queue leads: it runs the
// queue's updates, then hands the lead to the next in line. A batch that
// panics outside an update (in the driver, say) still hands over.
func (db *DB) update(ctx context.Context, op string, fn func(q queries) error) error {
	if db.engine != SQLite {
		return db.inTxPrepared(ctx, op, fn)
	}
	u := &queuedUpdate{ctx: ctx, fn: fn}
	db.commits.do(u, maxGroupCommit, func(batch []*queuedUpdate) {
		db.lanes.do(func() { db.runBatch(ctx, op, batch) })
	})
	return u.result()
}

func (u *queuedUpdate) result() error {
	if u.panicked != nil {
		panic(u.panicked)
	}
	return u.err
}

// runBatch runs the updates of a batch in one transaction. A batch of one
// needs no savepoint: its failure rolls back the transaction.
func (db *DB) runBatch(ctx context.Context, op string, batch []*queuedUpdate) {
	ctx = context.WithoutCancel(ctx) // the leader's caller giving up must not undo the others
	defer func() {
		// A panic outside the updates (the driver's, say) must not leave
		// the others to report a commit that did not happen.
		if p := recover(); p != nil {
			settle(batch, fmt.Errorf("group commit: panic: %v", p))
			panic(p)
		}
	}()
	err := db.inTxPrepared(ctx, op, func(q queries) error {
		q.txCtx = ctx // nor any other caller's
		if len(batch) == 1 {
			return batch[0].run(q)
		}
		for _, u := range batch {
			if _, err := q.exec(ctx, "SAVEPOINT chat_update"); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			if u.run(q) != nil {
				if _, err := q.exec(ctx, "ROLLBACK TO SAVEPOINT chat_update"); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
			}
			if _, err := q.exec(ctx, "RELEASE SAVEPOINT chat_update"); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	settle(batch, err)
}

// run runs the update's function and records its outcome; a panic is kept
// for the update's own caller to raise.
func (u *queuedUpdate) run(q queries) (err error) {
	defer func() {
		if p := recover(); p != nil {
			u.panicked = p
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	if err := u.ctx.Err(); err != nil {
		u.err = err
		return err
	}
	u.err = u.fn(q)
	return u.err
}
