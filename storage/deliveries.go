package storage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"gchd/chat"
)

// DeliveryStore returns the dispatcher's bookkeeping store.
func (db *DB) DeliveryStore() chat.DeliveryStore { return deliveryStore{db.reader()} }

// deliveryStore keeps deliveries.state in the codes of the first schema:
// 'p' pending, 'd' done, 'f' failed, 'x' expired. Statements spell them
// out, as the partial indexes over state = 'p' need; Settle is where the
// domain's DeliveryState maps onto them.
type deliveryStore struct{ queries }

type pendingRow struct {
	eventRow
	Login    string `db:"login"`
	Attempts int    `db:"attempts"`
}

const pendingColumns = "e.mid, e.group_id, e.kind, e.sender, e.sender_dn, e.body, e.ref, e.created_at, e.deleted, e.origin, e.content_type, d.login, d.attempts"

func pendingList(rows []pendingRow) []chat.PendingDelivery {
	out := make([]chat.PendingDelivery, len(rows))
	for i, r := range rows {
		out[i] = chat.PendingDelivery{Event: r.event(), Login: r.Login, Attempts: r.Attempts}
	}
	return out
}

func (s deliveryStore) PendingFor(ctx context.Context, login string, after chat.MID, limit int) ([]chat.PendingDelivery, error) {
	var rows []pendingRow
	err := s.selectAll(ctx, &rows, "SELECT "+pendingColumns+` FROM deliveries d JOIN events e ON e.mid = d.mid
		WHERE d.login = ? AND d.state = 'p' AND d.mid > ? ORDER BY d.mid LIMIT ?`, login, int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("select pending deliveries of %s: %w", login, err)
	}
	return pendingList(rows), nil
}

func (s deliveryStore) PendingOf(ctx context.Context, mid chat.MID, logins []string) ([]chat.PendingDelivery, error) {
	var out []chat.PendingDelivery
	for chunk := range slices.Chunk(logins, loginChunk) {
		var rows []pendingRow
		if err := s.selectAmongLogins(ctx, &rows, "SELECT "+pendingColumns+` FROM deliveries d JOIN events e ON e.mid = d.mid
			WHERE d.mid = ? AND d.state = 'p' AND d.login`, " ORDER BY d.login", chunk, int64(mid)); err != nil {
			return nil, fmt.Errorf("select pending deliveries of MID %d: %w", mid, err)
		}
		out = append(out, pendingList(rows)...)
	}
	return out, nil
}

func (s deliveryStore) WithPending(ctx context.Context, logins []string) ([]string, error) {
	var out []string
	for chunk := range slices.Chunk(logins, loginChunk) {
		var found []string
		if err := s.selectAmongLogins(ctx, &found, "SELECT DISTINCT login FROM deliveries WHERE state = 'p' AND login", "", chunk); err != nil {
			return nil, fmt.Errorf("select members with pending deliveries: %w", err)
		}
		out = append(out, found...)
	}
	return out, nil
}

func (s deliveryStore) Due(ctx context.Context, now time.Time, limit int) ([]chat.PendingDelivery, error) {
	var rows []pendingRow
	err := s.selectAll(ctx, &rows, "SELECT "+pendingColumns+` FROM deliveries d JOIN events e ON e.mid = d.mid
		WHERE d.state = 'p' AND d.next_at > 0 AND d.next_at <= ? ORDER BY d.next_at, d.mid LIMIT ?`, micros(now), limit)
	if err != nil {
		return nil, fmt.Errorf("select due deliveries: %w", err)
	}
	return pendingList(rows), nil
}

// Settle writes a batch in one transaction.
func (s deliveryStore) Settle(ctx context.Context, batch []chat.Settlement) error {
	if s.db.engine == SQLite {
		return s.settleEach(ctx, batch)
	}
	return s.settleMany(ctx, batch)
}

// settleEach runs one prepared UPDATE per row: in process, a compiled
// statement reused costs less than compiling a batch-sized one.
func (s deliveryStore) settleEach(ctx context.Context, batch []chat.Settlement) error {
	const (
		done = `UPDATE deliveries SET state = 'd', attempts = ?, next_at = 0, cf_at = CASE WHEN cf_at = 0 THEN ? ELSE cf_at END
			WHERE mid = ? AND login = ? AND state = 'p'`
		failed = "UPDATE deliveries SET state = 'f', attempts = ?, next_at = 0 WHERE mid = ? AND login = ? AND state = 'p'"
		retry  = "UPDATE deliveries SET attempts = ?, next_at = ? WHERE mid = ? AND login = ? AND state = 'p'"
	)
	return s.db.inTxPrepared(ctx, "delivery_settle", func(q queries) error {
		for _, st := range batch {
			var err error
			switch st.State {
			case chat.DeliveryDone:
				_, err = q.exec(ctx, done, st.Attempts, micros(st.At), int64(st.MID), st.Login)
			case chat.DeliveryFailed:
				_, err = q.exec(ctx, failed, st.Attempts, int64(st.MID), st.Login)
			default:
				_, err = q.exec(ctx, retry, st.Attempts, micros(st.Next), int64(st.MID), st.Login)
			}
			if err != nil {
				return fmt.Errorf("settle delivery %d to %s: %w", st.MID, st.Login, err)
			}
		}
		return nil
	})
}

// settleMany writes one UPDATE per kind of result, joined to the batch's
// rows as a VALUES list: a round trip per kind, not per row.
func (s deliveryStore) settleMany(ctx context.Context, batch []chat.Settlement) error {
	var done, failed, retry []chat.Settlement
	for _, st := range batch {
		switch st.State {
		case chat.DeliveryDone:
			done = append(done, st)
		case chat.DeliveryFailed:
			failed = append(failed, st)
		default:
			retry = append(retry, st)
		}
	}
	return s.db.inTx(ctx, "delivery_settle", func(tx *sqlx.Tx) error {
		for _, part := range []struct {
			rows []chat.Settlement
			set  string
		}{
			{done, "state = 'd', attempts = v.attempts, next_at = 0, cf_at = CASE WHEN deliveries.cf_at = 0 THEN v.at ELSE deliveries.cf_at END"},
			{failed, "state = 'f', attempts = v.attempts, next_at = 0"},
			{retry, "attempts = v.attempts, next_at = v.next_at"},
		} {
			for len(part.rows) > 0 {
				chunk := part.rows[:min(len(part.rows), 1000)]
				part.rows = part.rows[len(chunk):]
				if err := s.settleChunk(ctx, tx, chunk, part.set); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

func (s deliveryStore) settleChunk(ctx context.Context, tx *sqlx.Tx, rows []chat.Settlement, set string) error {
	var b strings.Builder
	b.WriteString("WITH v (mid, login, attempts, at, next_at) AS (VALUES ")
	args := make([]any, 0, 5*len(rows))
	for i, r := range rows {
		if i > 0 {
			b.WriteString(", ")
		}
		// Typed casts: PostgreSQL cannot infer parameter types inside VALUES.
		b.WriteString("(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS BIGINT), CAST(? AS BIGINT))")
		args = append(args, int64(r.MID), r.Login, r.Attempts, micros(r.At), micros(r.Next))
	}
	b.WriteString(") UPDATE deliveries SET " + set + " FROM v WHERE deliveries.mid = v.mid AND deliveries.login = v.login AND deliveries.state = 'p'")
	if _, err := tx.ExecContext(ctx, s.db.sql(b.String()), args...); err != nil {
		return fmt.Errorf("settle %d deliveries: %w", len(rows), err)
	}
	return nil
}

func (s deliveryStore) Expire(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.db.inTx(ctx, "delivery_expire", func(tx *sqlx.Tx) error {
		if ok, err := s.db.janitor(ctx, tx, deliveryJanitorLock); !ok {
			return err
		}
		res, err := tx.ExecContext(ctx, s.db.sql(`UPDATE deliveries SET state = 'x', next_at = 0
			WHERE state = 'p' AND mid IN (SELECT d.mid FROM deliveries d JOIN events e ON e.mid = d.mid
				WHERE d.state = 'p' AND e.created_at < ?)`), micros(before))
		if err != nil {
			return fmt.Errorf("expire deliveries: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return int(n), err
}

func (s deliveryStore) PendingSummary(ctx context.Context) (chat.PendingCounts, error) {
	var r struct {
		Waiting  int   `db:"waiting"`
		Retrying int   `db:"retrying"`
		Oldest   int64 `db:"oldest"`
	}
	err := s.get(ctx, &r, `SELECT COALESCE(SUM(CASE WHEN d.next_at = 0 THEN 1 ELSE 0 END), 0) AS waiting,
			COALESCE(SUM(CASE WHEN d.next_at > 0 THEN 1 ELSE 0 END), 0) AS retrying,
			COALESCE(MIN(e.created_at), 0) AS oldest
		FROM deliveries d JOIN events e ON e.mid = d.mid WHERE d.state = 'p'`)
	if err != nil {
		return chat.PendingCounts{}, fmt.Errorf("summarise pending deliveries: %w", err)
	}
	return chat.PendingCounts{Waiting: r.Waiting, Retrying: r.Retrying, Oldest: fromMicros(r.Oldest)}, nil
}

func (s deliveryStore) PurgeDeleted(ctx context.Context) (int, error) {
	var n int64
	err := s.db.inTx(ctx, "chat_purge", func(tx *sqlx.Tx) error {
		if ok, err := s.db.janitor(ctx, tx, purgeJanitorLock); !ok {
			return err
		}
		// DG events exist only for deleted groups (the partial index holds
		// just those); the group check guards against any other.
		res, err := tx.ExecContext(ctx, s.db.sql(`DELETE FROM events WHERE kind = 'DG'
			AND NOT EXISTS (SELECT 1 FROM chat_groups g WHERE g.id = events.group_id)
			AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.mid = events.mid AND d.state = 'p')`))
		if err != nil {
			return fmt.Errorf("purge deleted groups: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	return int(n), err
}

// WaitingAfter lists the members among logins with a delivery waiting for
// a registration among the events after MID after: a node's catch-up
// reads it to find work whose wake-up it may have missed, for the members
// whose deliveries it sends. Nil logins asks for every member; so does a
// list longer than a few chunks, for which one range scan is cheaper
// than the probes.
//
// The list matters where members are offline: their deliveries stay
// waiting, and a scan of every waiting row of the last seconds' events
// cost PostgreSQL about a tenth of a core at 1,500 posts/s with nobody
// online, every second.
func (db *DB) WaitingAfter(ctx context.Context, after chat.MID, logins []string, limit int) ([]string, error) {
	r := db.reader()
	if logins == nil || len(logins) > MaxWaitingLogins {
		var found []string
		if err := r.selectAll(ctx, &found,
			"SELECT DISTINCT login FROM deliveries WHERE mid > ? AND state = 'p' AND next_at = 0 LIMIT ?", int64(after), limit); err != nil {
			return nil, fmt.Errorf("select waiting deliveries after %d: %w", after, err)
		}
		return found, nil
	}
	var out []string
	for chunk := range slices.Chunk(logins, loginChunk) {
		var found []string
		if err := r.selectAmongLogins(ctx, &found, "SELECT DISTINCT login FROM deliveries WHERE state = 'p' AND mid > ? AND next_at = 0 AND login", "",
			chunk, int64(after)); err != nil {
			return nil, fmt.Errorf("select waiting deliveries after %d: %w", after, err)
		}
		out = append(out, found...)
		if len(out) >= limit {
			return out[:limit], nil
		}
	}
	return out, nil
}

// MaxWaitingLogins bounds the logins WaitingAfter looks up one by one.
const MaxWaitingLogins = 4096

// Advisory locks of the janitor work that one node does for the cluster
// at a time: "gchd" and a name of four letters, in ASCII.
const (
	deliveryJanitorLock = 0x67636864_64656c76 // "delv"
	purgeJanitorLock    = 0x67636864_70757267 // "purg"
)

// janitor takes the advisory lock of a piece of janitor work for the
// transaction, and reports false when another node holds it: that node
// does the work now. SQLite is for one node: there is nobody to share
// with.
func (db *DB) janitor(ctx context.Context, tx *sqlx.Tx, lock int64) (bool, error) {
	if db.engine != Postgres {
		return true, nil
	}
	var ok bool
	if err := tx.GetContext(ctx, &ok, "SELECT pg_try_advisory_xact_lock($1)", lock); err != nil {
		return false, fmt.Errorf("take the janitor's lock: %w", err)
	}
	return ok, nil
}
