// Package storage keeps gchd's data in SQL: an embedded SQLite file by
// default, PostgreSQL for production. One schema, migrations embedded per
// engine, portable SQL written with ? placeholders and rebound per engine.
// It implements the store interfaces that chat and registrar declare and
// never lets a driver type escape.
package storage

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"  // registers the "postgres" driver
	"modernc.org/sqlite" // registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"

	"gchd/chat"
	"gchd/registrar"
)

// Engine names a database engine.
type Engine string

const (
	SQLite   Engine = "sqlite"
	Postgres Engine = "postgres"
)

// ParseDSN splits a database setting into engine and driver DSN:
// "sqlite:PATH" or "postgres://..." (also "postgresql://...").
func ParseDSN(dsn string) (Engine, string, error) {
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" {
			return "", "", errors.New("sqlite DSN has no file path (want sqlite:PATH)")
		}
		return SQLite, path, nil
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		return Postgres, dsn, nil
	}
	return "", "", fmt.Errorf("unsupported database %q: want sqlite:PATH or postgres://USER@HOST/DB?sslmode=disable", redact(dsn))
}

// redact hides a password in a DSN for messages.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	userinfo := dsn[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return dsn[:scheme+3] + userinfo[:i] + ":xxxxx" + dsn[at:]
	}
	return dsn
}

// Options tune a DB.
type Options struct {
	// MaxOpenConns bounds the connection pool (PostgreSQL) or the reader pool
	// (SQLite, whose writes go through one connection). 0 picks a default.
	MaxOpenConns int
	// SQLiteSynchronous is SQLite's synchronous pragma: FULL (default) makes
	// every commit durable across power loss; NORMAL across process crashes.
	SQLiteSynchronous string
	// Observe, when set, is told the duration of every transaction and query
	// by operation name, for metrics.
	Observe func(op string, d time.Duration, err error)
}

// DB is an open database. It is safe for concurrent use.
type DB struct {
	engine  Engine
	w       *sqlx.DB // writes; for SQLite a single connection
	r       *sqlx.DB // reads; for PostgreSQL the same pool as w
	observe func(op string, d time.Duration, err error)
	sqlText sync.Map // query as written -> query for this engine
	stmts   sync.Map // stmtKey -> *sqlx.Stmt
	lanes   *lanes   // SQLite only
	// control carries the node's lease (and the cluster's own traffic) on
	// connections of its own: a pool busy with deliveries must not delay a
	// renewal into a fence. For SQLite it is the writer.
	control      *sqlx.DB
	source       string // the driver DSN, for connections opened later
	commits      groupCommit
	groupCommits groupBatches // PostgreSQL: chat updates batched per group
	bindings     bindingWrites
	// bindingsSaved is told the AORs of each committed batch of bindings
	// (OnBindingsSaved).
	bindingsSaved atomic.Pointer[func(aors []string)]
	accountReads  accountReads
	// writes spaces the batches of both writers, chat updates and
	// binding changes: on SQLite they share the one writer connection.
	writes pace
	reads  pace
}

// commitSpacing is the least time between the starts of two write batches
// while writers contend (see pace): long enough for a REGISTER burst to
// gather, short against a phone's retransmission timer.
const commitSpacing = 3 * time.Millisecond

// readSpacing is pace's spacing for account reads: each query pays a read
// transaction (locks, a fresh snapshot, the B-tree pages read again after
// any write), so fewer and larger batches cost less.
const readSpacing = 2 * time.Millisecond

// Open connects to the database named by dsn and applies pending migrations.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	db, err := Connect(ctx, dsn, opts)
	if err != nil {
		return nil, err
	}
	if err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Connect connects without migrating (gchd migrate does that explicitly).
func Connect(ctx context.Context, dsn string, opts Options) (*DB, error) {
	engine, source, err := ParseDSN(dsn)
	if err != nil {
		return nil, err
	}
	db := &DB{engine: engine, observe: opts.Observe}
	db.writes.spacing, db.reads.spacing = commitSpacing, readSpacing
	db.commits.pace, db.bindings.pace, db.accountReads.pace = &db.writes, &db.writes, &db.reads
	// Reads need not wait for each other: SQLite's readers run in
	// parallel beside the writer, PostgreSQL's on the pool's connections.
	// One read at a time capped the rate of new bindings below what the
	// CPU allowed, every register worker waiting in the read queue.
	db.accountReads.overlap = true
	switch engine {
	case SQLite:
		err = db.openSQLite(source, opts)
	case Postgres:
		err = db.openPostgres(source, opts)
	}
	if err != nil {
		return nil, err
	}
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := db.w.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", engine, redact(dsn), err)
	}
	return db, nil
}

func (db *DB) openSQLite(path string, opts Options) error {
	// Package-level registration of the bind type is idempotent; sqlx does
	// not know modernc's driver name.
	sqlx.BindDriver("sqlite", sqlx.QUESTION)
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("create database directory: %w", err)
		}
	}
	sync := strings.ToUpper(opts.SQLiteSynchronous)
	if sync == "" {
		sync = "FULL"
	}
	base := "file:" + path + "?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(" + sync + ")" +
		// Savepoints (see groupcommit.go) journal to a temporary file
		// otherwise: a write system call per page.
		// No memory map (mmap_size): a read transaction that finds the
		// WAL changed since its last one unmaps the whole file, and while
		// REGISTERs write bindings that is nearly every account read.
		// The unmapping (and the page faults after it, and the TLB
		// shootdowns it sends the other cores) cost more than the read
		// system calls a map saves.
		"&_pragma=temp_store(MEMORY)"
	w, err := sqlx.Open("sqlite", base+"&_txlock=immediate")
	if err != nil {
		return fmt.Errorf("open sqlite %s: %w", path, err)
	}
	// One writer: SQLite serialises writes anyway, and queueing in the pool
	// is cheaper and fairer than spinning on SQLITE_BUSY.
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	r, err := sqlx.Open("sqlite", base+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := opts.MaxOpenConns
	if n <= 0 {
		n = 8
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	db.w, db.r, db.control, db.source = w, r, w, path
	db.lanes = startLanes(n + 1)
	return nil
}

func (db *DB) openPostgres(dsn string, opts Options) error {
	// binary_parameters sends a statement with its parameters in one round
	// trip instead of two (lib/pq otherwise prepares every statement
	// first); an explicit setting in the DSN wins.
	if u, err := url.Parse(dsn); err == nil {
		q := u.Query()
		if !q.Has("binary_parameters") {
			q.Set("binary_parameters", "yes")
			u.RawQuery = q.Encode()
			dsn = u.String()
		}
	}
	p, err := sqlx.Open("postgres", dsn)
	if err != nil {
		return fmt.Errorf("open postgres: %w", err)
	}
	n := opts.MaxOpenConns
	if n <= 0 {
		n = 32
	}
	p.SetMaxOpenConns(n)
	p.SetMaxIdleConns(n)
	p.SetConnMaxIdleTime(5 * time.Minute)
	c, err := sqlx.Open("postgres", dsn)
	if err != nil {
		p.Close()
		return fmt.Errorf("open postgres: %w", err)
	}
	c.SetMaxOpenConns(2)
	c.SetMaxIdleConns(2)
	db.w, db.r, db.control, db.source = p, p, c, dsn
	return nil
}

// Operations names every transaction the store runs, as reported to
// Options.Observe: metrics can show each from the start, at zero.
func Operations() []string {
	return []string{"account_create", "account_delete", "account_import", "account_update", "bindings_expire",
		"bindings_save", "chat_purge", "chat_update", "delivery_expire", "delivery_settle", "migrate", "node_join", "node_leave", "node_renew", "notify", "secret", "write_probe"}
}

// Engine returns the database engine.
func (db *DB) Engine() Engine { return db.engine }

// Close closes every connection.
func (db *DB) Close() error {
	db.lanes.close()
	err := db.w.Close()
	if db.r != db.w {
		err = errors.Join(err, db.r.Close())
	}
	if db.control != nil && db.control != db.w {
		err = errors.Join(err, db.control.Close())
	}
	return err
}

// ProbeWrite commits an upsert of one row, this node's in settings
// ("write-probe:NODE"), for readiness: a database that answers reads may
// still refuse every write (a full disk, a PostgreSQL server or database
// set read-only), and a node in that state must leave the load balancer.
// The row is the node's own, so nodes sharing a database do not contend
// for it.
func (db *DB) ProbeWrite(ctx context.Context, node string) error {
	return db.inTx(ctx, "write_probe", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, db.sql("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value"),
			"write-probe:"+node, strconv.FormatInt(time.Now().UnixMicro(), 10))
		return err
	})
}

// Stats returns the connection pool statistics of the writer pool (SQLite)
// or the pool (PostgreSQL), and of the reader pool.
func (db *DB) Stats() (write, read sql.DBStats) {
	return db.w.Stats(), db.r.Stats()
}

// sql returns query rebound for the engine's placeholders, cached.
func (db *DB) sql(query string) string {
	if db.engine == SQLite {
		return query
	}
	if q, ok := db.sqlText.Load(query); ok {
		return q.(string)
	}
	q := sqlx.Rebind(sqlx.DOLLAR, query)
	db.sqlText.Store(query, q)
	return q
}

// timed reports the duration of op to the observer.
func (db *DB) timed(op string, start time.Time, err error) {
	if db.observe != nil {
		db.observe(op, time.Since(start), err)
	}
}

// inTx runs fn in a write transaction and commits it when fn returns nil. A
// panic in fn rolls back before it propagates, so the single SQLite writer
// connection is never left inside a transaction.
func (db *DB) inTx(ctx context.Context, op string, fn func(*sqlx.Tx) error) (err error) {
	start := time.Now()
	defer func() { db.timed(op, start, err) }()
	tx, err := db.w.BeginTxx(ctx, nil)
	if err != nil {
		return classify(fmt.Errorf("begin: %w", err))
	}
	committed := false
	defer func() {
		if !committed {
			tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return classify(err)
	}
	if err := tx.Commit(); err != nil {
		return classify(fmt.Errorf("commit: %w", err))
	}
	committed = true
	return nil
}

// unavailable marks an error that says the database cannot serve now, as
// opposed to one that says a statement is wrong: chat and registrar (and so
// the API and SIP) tell it by their ErrUnavailable and answer 503 with
// Retry-After instead of 500.
type unavailable struct{ err error }

func (e unavailable) Error() string { return "database unavailable: " + e.err.Error() }
func (e unavailable) Unwrap() error { return e.err }
func (e unavailable) Is(target error) bool {
	return target == chat.ErrUnavailable || target == registrar.ErrUnavailable
}

// classify marks err as unavailable when the driver reports that the
// database is down, unreachable, out of space or read-only; other errors
// are returned as they are.
func classify(err error) error {
	if err == nil || errors.Is(err, sql.ErrNoRows) || errors.Is(err, chat.ErrUnavailable) || !unavailableCause(err) {
		return err
	}
	return unavailable{err}
}

func unavailableCause(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff { // the primary result code of an extended one
		case sqlite3.SQLITE_FULL, // the disk (or a quota) is full
			sqlite3.SQLITE_IOERR,    // the file cannot be written or read
			sqlite3.SQLITE_READONLY, // the file or its directory is read-only
			sqlite3.SQLITE_CANTOPEN, // the file, its WAL or -shm cannot be opened
			sqlite3.SQLITE_BUSY:     // another process held the lock past busy_timeout
			return true
		}
		return false
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		code := string(pe.Code)
		switch {
		case pe.Severity == pq.Efatal || pe.Severity == pq.Epanic:
			// The session could not start or was ended: the database
			// refuses connections, was stopped, or does not exist.
			return true
		case strings.HasPrefix(code, "08"), // connection exception
			strings.HasPrefix(code, "53"),  // insufficient resources: disk full, out of memory, too many connections
			strings.HasPrefix(code, "57P"), // the server is shutting down, restarting or starting
			strings.HasPrefix(code, "58"),  // system error: I/O
			code == "25006":                // read_only_sql_transaction: the database or server is read-only
			return true
		}
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, context.DeadlineExceeded)
}

// micros converts a time to the stored form: microseconds since the epoch,
// 0 for the zero time.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromMicros converts the stored form back to a UTC time.
func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

// TableCounts returns the number of rows of each table, for diagnostics and
// for tests that check that a refused request changed nothing.
func (db *DB) TableCounts(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	for _, table := range []string{"accounts", "chat_groups", "members", "events", "deliveries", "media", "bindings"} {
		var n int
		if err := db.r.GetContext(ctx, &n, "SELECT COUNT(*) FROM "+table); err != nil {
			return nil, fmt.Errorf("count %s: %w", table, err)
		}
		out[table] = n
	}
	return out, nil
}
