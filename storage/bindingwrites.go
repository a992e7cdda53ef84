package storage

import (
	"context"
	"errors"
	"time"

	"gchd/registrar"
)

// maxBindingBatch bounds how many queued binding changes share one
// transaction.
const maxBindingBatch = 512

// bindingSaveTimeout bounds a batch's transaction: no one caller's
// context may cancel the others' changes.
const bindingSaveTimeout = 30 * time.Second

// bindingWrites batches the registrar's binding changes: every REGISTER
// that adds or moves a binding waits for its commit before it is answered,
// and under load one transaction and one disk flush serve all those queued
// meanwhile. The batches are spaced with chat's (DB.writes).
type bindingWrites = batcher[*bindingWrite]

// bindingWrite is one queued change. A binding is in put or in del, not
// both: the registrar decides the outcome, not the steps.
type bindingWrite struct {
	put []registrar.Binding
	del []registrar.BindingRef
	err error
}

// bindingCommit is a queued change to wait for.
type bindingCommit struct {
	s bindingStore
	c *queued[*bindingWrite]
}

// QueueBindings queues a change behind every change queued before it; the
// batches apply them in that order.
func (s bindingStore) QueueBindings(put []registrar.Binding, del []registrar.BindingRef) registrar.BindingCommit {
	return bindingCommit{s, s.db.bindings.add(&bindingWrite{put: put, del: del})}
}

// Wait returns once the change is committed, with its batch's error.
func (c bindingCommit) Wait() error {
	c.s.db.bindings.wait(c.c, maxBindingBatch, c.s.saveBatch)
	return c.c.item.err
}

// SaveBindings queues a change and waits for it.
func (s bindingStore) SaveBindings(ctx context.Context, put []registrar.Binding, del []registrar.BindingRef) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.QueueBindings(put, del).Wait()
}

// saveBatch writes a batch's changes in one transaction.
func (s bindingStore) saveBatch(batch []*bindingWrite) {
	for _, w := range batch {
		w.err = errBindingsNotSaved // until the save returns, if it panics
	}
	put, del := squash(batch)
	ctx, cancel := context.WithTimeout(context.Background(), bindingSaveTimeout)
	defer cancel()
	var err error
	// On a lane: the leader is a request's goroutine, whose small stack
	// SQLite's C-turned-Go would grow.
	s.db.lanes.do(func() { err = s.save(ctx, put, del) })
	for _, w := range batch {
		w.err = err
	}
	if fn := s.db.bindingsSaved.Load(); err == nil && fn != nil && (len(put) > 0 || len(del) > 0) {
		aors := make([]string, 0, len(put)+len(del))
		for _, bd := range put {
			aors = append(aors, bd.AOR)
		}
		for _, d := range del {
			aors = append(aors, d.AOR)
		}
		(*fn)(aors)
	}
}

// OnBindingsSaved has fn told the AORs of each batch of binding changes
// once it is committed (an AOR may be named more than once): the other
// nodes are to read them again. fn must not block: it runs before the
// registrars waiting for the batch are answered.
func (db *DB) OnBindingsSaved(fn func(aors []string)) { db.bindingsSaved.Store(&fn) }

var errBindingsNotSaved = errors.New("binding save did not complete")

// squash keeps the last change of each binding in a batch, in the order
// the changes were queued, so that the store never sees the same row twice
// in one statement (PostgreSQL refuses an upsert that touches a row twice)
// and a removal queued after a put stays removed. It belongs with the
// batching: the registrar's changes are each whole, and only a batch
// brings two of one binding together.
func squash(batch []*bindingWrite) ([]registrar.Binding, []registrar.BindingRef) {
	n := 0
	for _, w := range batch {
		n += len(w.put) + len(w.del)
	}
	last := make(map[registrar.BindingRef]*registrar.Binding, n) // nil: removed
	for _, w := range batch {
		for _, d := range w.del {
			last[d] = nil
		}
		for j := range w.put {
			last[registrar.BindingRef{AOR: w.put[j].AOR, Key: w.put[j].Key()}] = &w.put[j]
		}
	}
	put := make([]registrar.Binding, 0, len(last))
	var del []registrar.BindingRef
	for ref, bd := range last {
		if bd != nil {
			put = append(put, *bd)
		} else {
			del = append(del, ref)
		}
	}
	return put, del
}
