package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"gchd/cluster"
)

// Nodes returns the store of node leases that cluster.Membership uses.
func (db *DB) Nodes() cluster.Store { return nodes{db} }

type nodes struct{ db *DB }

// clock is the database's clock in microseconds since 1970: every lease
// is judged by one clock, whichever node reads it.
func (db *DB) clock() string {
	if db.engine == Postgres {
		return "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
	}
	return "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)"
}

func (n nodes) inTx(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) (err error) {
	db := n.db
	start := time.Now()
	defer func() { db.timed(op, start, err) }()
	tx, err := db.control.BeginTxx(ctx, nil)
	if err != nil {
		return classify(fmt.Errorf("begin: %w", err))
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		return classify(fmt.Errorf("commit: %w", err))
	}
	return nil
}

type nodeRow struct {
	Name       string `db:"name"`
	Epoch      int64  `db:"epoch"`
	Address    string `db:"address"`
	LeaseUntil int64  `db:"lease_until"`
	Now        int64  `db:"now"`
}

func (n nodes) JoinNode(ctx context.Context, name, address string, lease time.Duration, exclusive bool) (cluster.Node, error) {
	db := n.db
	var joined cluster.Node
	err := n.inTx(ctx, "node_join", func(tx *sqlx.Tx) error {
		lock := ""
		if db.engine == Postgres {
			// Two processes starting under one name at once: the second
			// waits here and then finds the first's lease.
			if _, err := tx.ExecContext(ctx, "LOCK TABLE nodes IN SHARE ROW EXCLUSIVE MODE"); err != nil {
				return fmt.Errorf("lock nodes: %w", err)
			}
			lock = " FOR UPDATE"
		}
		var rows []nodeRow
		if err := tx.SelectContext(ctx, &rows, "SELECT name, epoch, address, lease_until, "+db.clock()+" AS now FROM nodes"+lock); err != nil {
			return fmt.Errorf("read nodes: %w", err)
		}
		var epoch int64
		var now int64
		for _, r := range rows {
			now = r.Now
			switch {
			case r.Name == name && r.LeaseUntil > r.Now:
				return &cluster.NameHeldError{Name: name, Remaining: time.Duration(r.LeaseUntil-r.Now) * time.Microsecond}
			case r.Name == name:
				epoch = r.Epoch
			case exclusive && r.LeaseUntil > r.Now:
				return &cluster.OtherNodeError{Other: r.Name}
			}
		}
		if len(rows) == 0 {
			if err := tx.GetContext(ctx, &now, "SELECT "+db.clock()); err != nil {
				return fmt.Errorf("read the database clock: %w", err)
			}
		}
		joined = cluster.Node{Name: name, Epoch: epoch + 1, Address: address}
		_, err := tx.ExecContext(ctx, db.sql(`INSERT INTO nodes (name, epoch, address, started, lease_until) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET epoch = excluded.epoch, address = excluded.address, started = excluded.started, lease_until = excluded.lease_until`),
			name, joined.Epoch, address, now, now+lease.Microseconds())
		if err != nil {
			return fmt.Errorf("write node %s: %w", name, err)
		}
		return nil
	})
	return joined, err
}

func (n nodes) RenewNode(ctx context.Context, name string, epoch int64, lease time.Duration) (cluster.Renewal, error) {
	db := n.db
	r := cluster.Renewed
	err := n.inTx(ctx, "node_renew", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, db.sql("UPDATE nodes SET lease_until = "+db.clock()+" + ? WHERE name = ? AND epoch = ? AND lease_until > "+db.clock()),
			lease.Microseconds(), name, epoch)
		if err != nil {
			return fmt.Errorf("renew node %s: %w", name, err)
		}
		if k, err := res.RowsAffected(); err != nil || k == 1 {
			return err
		}
		var current int64
		err = tx.GetContext(ctx, &current, db.sql("SELECT epoch FROM nodes WHERE name = ?"), name)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			r = cluster.Displaced // the row was removed by hand
		case err != nil:
			return fmt.Errorf("read node %s: %w", name, err)
		case current == epoch:
			r = cluster.Lapsed
		default:
			r = cluster.Displaced
		}
		return nil
	})
	return r, err
}

func (n nodes) LiveNodes(ctx context.Context) ([]cluster.Node, error) {
	db := n.db
	var rows []nodeRow
	pool := db.control
	if db.engine == SQLite {
		pool = db.r // a read need not queue behind the one writer
	}
	err := pool.SelectContext(ctx, &rows, "SELECT name, epoch, address, lease_until, 0 AS now FROM nodes WHERE lease_until > "+db.clock()+" ORDER BY name")
	if err != nil {
		return nil, classify(fmt.Errorf("read live nodes: %w", err))
	}
	out := make([]cluster.Node, len(rows))
	for i, r := range rows {
		out[i] = cluster.Node{Name: r.Name, Epoch: r.Epoch, Address: r.Address}
	}
	return out, nil
}

func (n nodes) LeaveNode(ctx context.Context, name string, epoch int64) error {
	return n.inTx(ctx, "node_leave", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, n.db.sql("UPDATE nodes SET lease_until = 0 WHERE name = ? AND epoch = ?"), name, epoch)
		return err
	})
}
