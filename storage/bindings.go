package storage

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"gchd/registrar"
)

// BindingStore returns the registrar's location store.
func (db *DB) BindingStore() registrar.BindingStore { return bindingStore{db.reader()} }

type bindingStore struct{ queries }

type bindingRow struct {
	AOR        string `db:"aor"`
	Key        string `db:"binding_key"`
	URI        string `db:"uri"`
	Instance   string `db:"instance"`
	RegID      int    `db:"reg_id"`
	Q          string `db:"q"`
	Expires    int64  `db:"expires_at"`
	CallID     string `db:"call_id"`
	CSeq       int64  `db:"cseq"`
	Transport  string `db:"transport"`
	Source     string `db:"source"`
	NAT        bool   `db:"nat"`
	Node       string `db:"node"`
	UserAgent  string `db:"user_agent"`
	Updated    int64  `db:"updated_at"`
	PNProvider string `db:"pn_provider"`
	PNPRID     string `db:"pn_prid"`
	PNParam    string `db:"pn_param"`
	Epoch      int64  `db:"epoch"`
}

const bindingColumns = "aor, binding_key, uri, instance, reg_id, q, expires_at, call_id, cseq, transport, source, nat, node, user_agent, updated_at, pn_provider, pn_prid, pn_param, epoch"

// bindingColumnCount is the number of bindingColumns: the arguments of
// one row.
var bindingColumnCount = strings.Count(bindingColumns, ",") + 1

func (r bindingRow) binding() registrar.Binding {
	return registrar.Binding{
		AOR: r.AOR, URI: r.URI, Instance: r.Instance, RegID: r.RegID, Q: r.Q, Expires: fromMicros(r.Expires),
		CallID: r.CallID, CSeq: uint32(r.CSeq), Transport: r.Transport, Source: r.Source, NAT: r.NAT, Node: r.Node, Epoch: r.Epoch,
		UserAgent: r.UserAgent, Updated: fromMicros(r.Updated),
		Push: registrar.Push{Provider: r.PNProvider, PRID: r.PNPRID, Param: r.PNParam},
	}
}

func (s bindingStore) LoadBindings(ctx context.Context, now time.Time) ([]registrar.Binding, error) {
	var rows []bindingRow
	if err := s.selectAll(ctx, &rows, "SELECT "+bindingColumns+" FROM bindings WHERE expires_at > ?", micros(now)); err != nil {
		return nil, fmt.Errorf("select bindings: %w", err)
	}
	out := make([]registrar.Binding, len(rows))
	for i, r := range rows {
		out[i] = r.binding()
	}
	return out, nil
}

const (
	bindingUpsertSet = ` ON CONFLICT (aor, binding_key) DO UPDATE SET uri = excluded.uri, instance = excluded.instance,
				reg_id = excluded.reg_id, q = excluded.q, expires_at = excluded.expires_at, call_id = excluded.call_id,
				cseq = excluded.cseq, transport = excluded.transport, source = excluded.source, nat = excluded.nat, node = excluded.node,
				user_agent = excluded.user_agent, updated_at = excluded.updated_at, pn_provider = excluded.pn_provider,
				pn_prid = excluded.pn_prid, pn_param = excluded.pn_param, epoch = excluded.epoch`
	bindingValues = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
	bindingDelete = "DELETE FROM bindings WHERE aor = ? AND binding_key = ?"
)

func bindingArgs(bd registrar.Binding) []any {
	return []any{bd.AOR, bd.Key(), bd.URI, bd.Instance, bd.RegID, bd.Q, micros(bd.Expires),
		bd.CallID, int64(bd.CSeq), bd.Transport, bd.Source, bd.NAT, bd.Node, bd.UserAgent, micros(bd.Updated),
		bd.Push.Provider, bd.Push.PRID, bd.Push.Param, bd.Epoch}
}

// save upserts and deletes in one transaction: the batch of bindingWrites,
// a REGISTER burst in one commit, not one per phone.
func (s bindingStore) save(ctx context.Context, put []registrar.Binding, del []registrar.BindingRef) error {
	if s.db.engine == SQLite {
		return s.saveEach(ctx, put, del)
	}
	return s.saveMany(ctx, put, del)
}

// saveEach runs prepared statements: one per deleted binding (deletes
// are few), and new or changed bindings in chunks of 16, 4 and 1 rows.
// SQLite runs in this process, so a statement costs no round trip, but
// each still pays database/sql's and the driver's work around it, once
// per row when every row had its own: a many-row statement of a fixed
// size is compiled once and pays it once per chunk. (Compiling one for
// each batch's exact size cost more than it saved.)
func (s bindingStore) saveEach(ctx context.Context, put []registrar.Binding, del []registrar.BindingRef) error {
	return s.db.inTxPrepared(ctx, "bindings_save", func(q queries) error {
		for _, d := range del {
			if _, err := q.exec(ctx, bindingDelete, d.AOR, d.Key); err != nil {
				return fmt.Errorf("delete binding %s %s: %w", d.AOR, d.Key, err)
			}
		}
		args := make([]any, 0, bindingChunks[0]*bindingColumnCount)
		for len(put) > 0 {
			n := bindingChunks[len(bindingChunks)-1]
			for _, c := range bindingChunks {
				if c <= len(put) {
					n = c
					break
				}
			}
			args = args[:0]
			for _, bd := range put[:n] {
				args = append(args, bindingArgs(bd)...)
			}
			if _, err := q.exec(ctx, bindingUpserts[n], args...); err != nil {
				return fmt.Errorf("upsert %d bindings from %s: %w", n, put[0].AOR, err)
			}
			put = put[n:]
		}
		return nil
	})
}

// bindingChunks are the row counts of saveEach's upserts, largest first.
var bindingChunks = [...]int{16, 4, 1}

// bindingUpserts holds the upsert of each chunk size.
var bindingUpserts = func() map[int]string {
	m := make(map[int]string, len(bindingChunks))
	for _, n := range bindingChunks {
		m[n] = "INSERT INTO bindings (" + bindingColumns + ") VALUES " +
			strings.TrimSuffix(strings.Repeat(bindingValues+", ", n), ", ") + bindingUpsertSet
	}
	return m
}()

// saveMany sends many rows per statement: with PostgreSQL each statement
// is a round trip.
func (s bindingStore) saveMany(ctx context.Context, put []registrar.Binding, del []registrar.BindingRef) error {
	return s.db.inTx(ctx, "bindings_save", func(tx *sqlx.Tx) error {
		for len(del) > 0 {
			chunk := del[:min(len(del), 400)]
			del = del[len(chunk):]
			var b strings.Builder
			b.WriteString("DELETE FROM bindings WHERE (aor, binding_key) IN (VALUES ")
			args := make([]any, 0, 2*len(chunk))
			for i, d := range chunk {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("(?, ?)")
				args = append(args, d.AOR, d.Key)
			}
			b.WriteString(")")
			if _, err := tx.ExecContext(ctx, s.db.sql(b.String()), args...); err != nil {
				return fmt.Errorf("delete %d bindings: %w", len(chunk), err)
			}
		}
		for len(put) > 0 {
			chunk := put[:min(len(put), 200)]
			put = put[len(chunk):]
			var b strings.Builder
			b.WriteString("INSERT INTO bindings (" + bindingColumns + ") VALUES ")
			args := make([]any, 0, bindingColumnCount*len(chunk))
			for i, bd := range chunk {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString(bindingValues)
				args = append(args, bindingArgs(bd)...)
			}
			b.WriteString(bindingUpsertSet)
			if _, err := tx.ExecContext(ctx, s.db.sql(b.String()), args...); err != nil {
				return fmt.Errorf("upsert %d bindings: %w", len(chunk), err)
			}
		}
		return nil
	})
}

// DeleteExpiredBindings removes the expired rows of node, and, once for
// the cluster, those of nodes that hold no lease: a live node's row may
// look expired while its refresh is still being written behind
// (registrar.refresh_write), so only its own node removes it. The
// advisory lock keeps the nodes from all doing the same sweep at once.
func (s bindingStore) DeleteExpiredBindings(ctx context.Context, node string, t time.Time) (int, error) {
	var n int64
	err := s.db.inTx(ctx, "bindings_expire", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.sql("DELETE FROM bindings WHERE expires_at <= ? AND node = ?"), micros(t), node)
		if err != nil {
			return fmt.Errorf("delete expired bindings: %w", err)
		}
		n, _ = res.RowsAffected()
		if ok, err := s.db.janitor(ctx, tx, bindingJanitorLock); !ok {
			return err // nil when another node sweeps now
		}
		res, err = tx.ExecContext(ctx, s.db.sql("DELETE FROM bindings WHERE expires_at <= ? AND node <> ? AND node NOT IN (SELECT name FROM nodes WHERE lease_until > "+s.db.clock()+")"),
			micros(t), node)
		if err != nil {
			return fmt.Errorf("delete expired bindings of nodes gone: %w", err)
		}
		k, _ := res.RowsAffected()
		n += k
		return nil
	})
	return int(n), err
}

// bindingJanitorLock is the advisory lock of the cluster's binding
// janitor (janitor).
const bindingJanitorLock = 0x67636864_62696e64 // "bind"

// BindingsOf returns the stored bindings of aors that expire after now:
// another node changed them.
func (s bindingStore) BindingsOf(ctx context.Context, aors []string, now time.Time) ([]registrar.Binding, error) {
	var out []registrar.Binding
	for len(aors) > 0 {
		chunk := aors[:min(len(aors), 500)]
		aors = aors[len(chunk):]
		q := "SELECT " + bindingColumns + " FROM bindings WHERE expires_at > ? AND aor IN (?" + strings.Repeat(", ?", len(chunk)-1) + ")"
		args := make([]any, 0, len(chunk)+1)
		args = append(args, micros(now))
		for _, a := range chunk {
			args = append(args, a)
		}
		var rows []bindingRow
		if err := s.selectAll(ctx, &rows, q, args...); err != nil {
			return nil, fmt.Errorf("select bindings of %d AORs: %w", len(chunk), err)
		}
		for _, r := range rows {
			out = append(out, r.binding())
		}
	}
	return out, nil
}

// Secret returns the named server secret, creating a random one on first
// use; every node sharing the database gets the same.
func (db *DB) Secret(ctx context.Context, name string) ([]byte, error) {
	var value string
	err := db.inTx(ctx, "secret", func(tx *sqlx.Tx) error {
		err := tx.GetContext(ctx, &value, db.sql("SELECT value FROM settings WHERE name = ?"), name)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return err
		}
		value = hex.EncodeToString(b)
		_, err = tx.ExecContext(ctx, db.sql("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"), name, value)
		if err != nil {
			return err
		}
		// Another node may have won the race: read what is stored.
		return tx.GetContext(ctx, &value, db.sql("SELECT value FROM settings WHERE name = ?"), name)
	})
	if err != nil {
		return nil, fmt.Errorf("secret %s: %w", name, err)
	}
	return hex.DecodeString(value)
}

// removalsSetting names the settings row that lists the bindings an
// operator removed (gchd registrations del) in the last removalsKept:
// every node holding bindings in memory reads it (BindingRemovals) and
// forgets them too.
const (
	removalsSetting = "bindings_removed"
	removalsKept    = 10 * time.Minute
)

type removalJSON struct {
	AOR string `json:"aor"`
	Key string `json:"key"`
	At  int64  `json:"at"` // microseconds since the epoch
}

// ListBindings returns the stored bindings of aor ("" for every AOR) that
// expire after now, by AOR and then oldest first. A refresh that only
// moved an expiry may be written up to registrar.refresh_write later.
func (db *DB) ListBindings(ctx context.Context, aor string, now time.Time) ([]registrar.Binding, error) {
	q := "SELECT " + bindingColumns + " FROM bindings WHERE expires_at > ?"
	args := []any{micros(now)}
	if aor != "" {
		q += " AND aor = ?"
		args = append(args, aor)
	}
	var rows []bindingRow
	if err := db.reader().selectAll(ctx, &rows, q+" ORDER BY aor, updated_at", args...); err != nil {
		return nil, fmt.Errorf("select bindings: %w", err)
	}
	out := make([]registrar.Binding, len(rows))
	for i, r := range rows {
		out[i] = r.binding()
	}
	return out, nil
}

// RemoveBindings deletes the bindings of aor, only the one whose Contact
// URI is contact when contact is not "", and records their removal for
// the servers that hold them in memory, in one transaction. It returns
// the bindings removed.
func (db *DB) RemoveBindings(ctx context.Context, aor, contact string, now time.Time) ([]registrar.Binding, error) {
	var removed []registrar.Binding
	err := db.inTx(ctx, "bindings_remove", func(tx *sqlx.Tx) error {
		q := "SELECT " + bindingColumns + " FROM bindings WHERE aor = ?"
		args := []any{aor}
		if contact != "" {
			q += " AND uri = ?"
			args = append(args, contact)
		}
		var rows []bindingRow
		if err := tx.SelectContext(ctx, &rows, db.sql(q), args...); err != nil {
			return fmt.Errorf("select bindings of %s: %w", aor, err)
		}
		if len(rows) == 0 {
			return nil
		}
		// The list is read and written back whole: on PostgreSQL the row
		// is locked first, so that two removals at once both stay listed
		// (SQLite runs one write transaction at a time).
		if _, err := tx.ExecContext(ctx, db.sql("INSERT INTO settings (name, value) VALUES (?, '[]') ON CONFLICT (name) DO NOTHING"), removalsSetting); err != nil {
			return fmt.Errorf("record removals: %w", err)
		}
		sel := "SELECT value FROM settings WHERE name = ?"
		if db.engine == Postgres {
			sel += " FOR UPDATE"
		}
		var value string
		if err := tx.GetContext(ctx, &value, db.sql(sel), removalsSetting); err != nil {
			return fmt.Errorf("read removals: %w", err)
		}
		var list []removalJSON
		_ = json.Unmarshal([]byte(value), &list) // a damaged list starts again
		keep := list[:0]
		for _, r := range list {
			if fromMicros(r.At).After(now.Add(-removalsKept)) {
				keep = append(keep, r)
			}
		}
		list = keep
		for _, r := range rows {
			if _, err := tx.ExecContext(ctx, db.sql(bindingDelete), r.AOR, r.Key); err != nil {
				return fmt.Errorf("delete binding %s %s: %w", r.AOR, r.Key, err)
			}
			list = append(list, removalJSON{AOR: r.AOR, Key: r.Key, At: micros(now)})
			removed = append(removed, r.binding())
		}
		b, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.sql("UPDATE settings SET value = ? WHERE name = ?"), string(b), removalsSetting); err != nil {
			return fmt.Errorf("record removals: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return removed, nil
}

// BindingRemovals lists the bindings an operator removed lately, for the
// registrar to forget the ones it still holds: one read of one row.
func (s bindingStore) BindingRemovals(ctx context.Context) ([]registrar.BindingRemoval, error) {
	var value string
	err := s.get(ctx, &value, "SELECT value FROM settings WHERE name = ?", removalsSetting)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read binding removals: %w", err)
	}
	var list []removalJSON
	if err := json.Unmarshal([]byte(value), &list); err != nil {
		return nil, fmt.Errorf("read binding removals: %w", err)
	}
	out := make([]registrar.BindingRemoval, len(list))
	for i, r := range list {
		out[i] = registrar.BindingRemoval{BindingRef: registrar.BindingRef{AOR: r.AOR, Key: r.Key}, At: fromMicros(r.At)}
	}
	return out, nil
}
