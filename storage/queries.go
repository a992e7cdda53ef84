package storage

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// queries runs SQL over a pool or inside a transaction; its errors are
// classified (classify), so that a database that is down reads as such. Fixed statements
// are prepared once per pool and reused: SQLite otherwise compiles every
// statement on every call, and PostgreSQL parses and plans it again.
type queries struct {
	db   *DB
	pool *sqlx.DB // where statements are prepared (the writer pool for transactions)
	tx   *sqlx.Tx // nil outside a transaction
	// wanted collects statements a transaction ran unprepared; they are
	// prepared after it ends. Preparing inside it would need a second
	// connection, and SQLite's writer pool has only the one the
	// transaction holds.
	wanted *[]string
	// txCtx, when set, replaces the context of every statement: in a
	// transaction shared by several callers (groupcommit.go), one caller
	// giving up must not interrupt a statement, which would make SQLite
	// roll back the others' work with its own.
	txCtx context.Context
	// effects, when set, learns what each statement did: an update that
	// shares a PostgreSQL transaction without a savepoint (groupbatch.go)
	// is undone by running its neighbours again, which is needed only when
	// it wrote or a statement of it failed.
	effects *effects
	// held, in a batch of one chat group's updates, is that group: the
	// transaction holds its row lock, and what was read of it (groupbatch.go).
	held *heldGroup
	// appends, in such a batch on PostgreSQL, holds the events appended
	// and not written yet (appendbatch.go): every statement writes them
	// first.
	appends *appendBuffer
}

// ctx returns the context a statement runs with.
func (q queries) ctx(ctx context.Context) context.Context {
	if q.txCtx != nil {
		return q.txCtx
	}
	return ctx
}

func (db *DB) reader() queries { return queries{db: db, pool: db.r} }

func (db *DB) inTxQueries(tx *sqlx.Tx, wanted *[]string) queries {
	return queries{db: db, pool: db.w, tx: tx, wanted: wanted}
}

// inTxPrepared runs fn in a write transaction whose fixed statements are
// prepared: those first seen in it are prepared after it ends.
func (db *DB) inTxPrepared(ctx context.Context, op string, fn func(q queries) error) error {
	var wanted []string
	err := db.inTx(ctx, op, func(tx *sqlx.Tx) error {
		wanted = wanted[:0]
		return fn(db.inTxQueries(tx, &wanted))
	})
	if len(wanted) > 0 {
		db.prepareWanted(ctx, wanted)
	}
	return err
}

// prepareWanted prepares what a transaction ran unprepared.
func (db *DB) prepareWanted(ctx context.Context, wanted []string) {
	for _, query := range wanted {
		key := stmtKey{db.w, query}
		if _, ok := db.stmts.Load(key); ok {
			continue
		}
		if st, err := db.w.PreparexContext(ctx, db.sql(query)); err == nil {
			if _, loaded := db.stmts.LoadOrStore(key, st); loaded {
				st.Close()
			}
		}
	}
}

type stmtKey struct {
	pool  *sqlx.DB
	query string
}

// prepared returns the statement for query, prepared on q's pool and bound
// to q's transaction; nil inside a transaction when it is not prepared yet.
func (q queries) prepared(ctx context.Context, query string) (*sqlx.Stmt, error) {
	if err := q.flushAppends(ctx); err != nil {
		return nil, err
	}
	key := stmtKey{q.pool, query}
	v, ok := q.db.stmts.Load(key)
	if !ok && q.tx != nil {
		*q.wanted = append(*q.wanted, query)
		return nil, nil
	}
	if !ok {
		st, err := q.pool.PreparexContext(ctx, q.db.sql(query))
		if err != nil {
			return nil, classify(fmt.Errorf("prepare: %w", err))
		}
		var loaded bool
		if v, loaded = q.db.stmts.LoadOrStore(key, st); loaded {
			st.Close()
		}
	}
	st := v.(*sqlx.Stmt)
	if q.tx != nil {
		return q.tx.StmtxContext(ctx, st), nil
	}
	return st, nil
}

func (q queries) get(ctx context.Context, dest any, query string, args ...any) error {
	ctx = q.ctx(ctx)
	st, err := q.prepared(ctx, query)
	if err != nil {
		return err
	}
	if st == nil {
		return q.effects.note(query, classify(sqlx.GetContext(ctx, q.ext(), dest, q.db.sql(query), args...)))
	}
	return q.effects.note(query, classify(st.GetContext(ctx, dest, args...)))
}

// scan reads one row into dest in column order. It skips sqlx's
// reflection, for the reads on every request.
func (q queries) scan(ctx context.Context, query string, args []any, dest ...any) error {
	ctx = q.ctx(ctx)
	st, err := q.prepared(ctx, query)
	if err != nil {
		return err
	}
	if st == nil {
		return q.effects.note(query, classify(q.ext().QueryRowxContext(ctx, q.db.sql(query), args...).Scan(dest...)))
	}
	return q.effects.note(query, classify(st.QueryRowContext(ctx, args...).Scan(dest...)))
}

func (q queries) selectAll(ctx context.Context, dest any, query string, args ...any) error {
	ctx = q.ctx(ctx)
	st, err := q.prepared(ctx, query)
	if err != nil {
		return err
	}
	if st == nil {
		return q.selectOnce(ctx, dest, query, args...)
	}
	return q.effects.note(query, classify(st.SelectContext(ctx, dest, args...)))
}

// selectAmongLogins runs query, whose last condition is on a login
// column, for those of logins, then tail; args are query's own. On
// PostgreSQL the logins are one array parameter, so one prepared
// statement serves any number of them; SQLite has no arrays and gets a
// placeholder each, in a statement not kept prepared. No logins select
// nothing.
func (q queries) selectAmongLogins(ctx context.Context, dest any, query, tail string, logins []string, args ...any) error {
	if len(logins) == 0 {
		return nil
	}
	if q.db.engine == Postgres {
		return q.selectAll(ctx, dest, query+" = ANY(?)"+tail, append(slices.Clip(args), pq.Array(logins))...)
	}
	all := slices.Grow(slices.Clip(args), len(logins))
	for _, l := range logins {
		all = append(all, l)
	}
	return q.selectOnce(ctx, dest, query+" IN (?"+strings.Repeat(", ?", len(logins)-1)+")"+tail, all...)
}

// loginChunk bounds the logins of one statement: SQLite's limit on
// placeholders, and the size of PostgreSQL's array, stay far away.
const loginChunk = 500

func (q queries) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = q.ctx(ctx)
	st, err := q.prepared(ctx, query)
	if err != nil {
		return nil, err
	}
	if st == nil {
		return q.execOnce(ctx, query, args...)
	}
	res, err := st.ExecContext(ctx, args...)
	return res, q.effects.note(query, classify(err))
}

// ext runs statements whose text varies (IN lists, multi-row VALUES):
// those are not worth preparing.
func (q queries) ext() sqlx.ExtContext {
	if q.tx != nil {
		return q.tx
	}
	return q.pool
}

func (q queries) selectOnce(ctx context.Context, dest any, query string, args ...any) error {
	ctx = q.ctx(ctx)
	if err := q.flushAppends(ctx); err != nil {
		return err
	}
	return q.effects.note(query, classify(sqlx.SelectContext(ctx, q.ext(), dest, q.db.sql(query), args...)))
}

func (q queries) execOnce(ctx context.Context, query string, args ...any) (sql.Result, error) {
	ctx = q.ctx(ctx)
	if err := q.flushAppends(ctx); err != nil {
		return nil, err
	}
	res, err := q.ext().ExecContext(ctx, q.db.sql(query), args...)
	return res, q.effects.note(query, classify(err))
}
