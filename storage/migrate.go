package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations
var migrationFiles embed.FS

// migration is one schema step: migrations/<engine>/NNNN_name.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationsFor lists an engine's migrations in version order.
func migrationsFor(engine Engine) ([]migration, error) {
	dir := path.Join("migrations", string(engine))
	entries, err := fs.ReadDir(migrationFiles, dir)
	if err != nil {
		return nil, fmt.Errorf("read embedded migrations: %w", err)
	}
	var out []migration
	for _, e := range entries {
		name := e.Name()
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(name, ".sql") {
			return nil, fmt.Errorf("embedded migration %s: name is not NNNN_name.sql", name)
		}
		body, err := fs.ReadFile(migrationFiles, path.Join(dir, name))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: name, sql: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("embedded migrations of %s skip from %d to %d", engine, i, m.version)
		}
	}
	return out, nil
}

// SchemaVersion returns the version the database is at and the newest this
// binary knows.
func (db *DB) SchemaVersion(ctx context.Context) (current, known int, err error) {
	ms, err := migrationsFor(db.engine)
	if err != nil {
		return 0, 0, err
	}
	if err := db.ensureMigrationTable(ctx); err != nil {
		return 0, 0, err
	}
	err = db.w.GetContext(ctx, &current, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
	if err != nil {
		return 0, 0, fmt.Errorf("read schema version: %w", err)
	}
	return current, len(ms), nil
}

// AppliedVersion reads the schema version through the reader pool and
// writes nothing: for readiness checks, which must not queue behind writes.
func (db *DB) AppliedVersion(ctx context.Context) (current, known int, err error) {
	ms, err := migrationsFor(db.engine)
	if err != nil {
		return 0, 0, err
	}
	if err := db.r.GetContext(ctx, &current, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"); err != nil {
		return 0, 0, classify(fmt.Errorf("read schema version: %w", err))
	}
	return current, len(ms), nil
}

// ensureMigrationTable creates the table of applied migrations. Nodes
// starting at once on a fresh PostgreSQL database take turns under the
// migrations' advisory lock: two concurrent CREATE TABLE IF NOT EXISTS
// collide in PostgreSQL's catalog.
func (db *DB) ensureMigrationTable(ctx context.Context) error {
	return db.inTx(ctx, "migrate", func(tx *sqlx.Tx) error {
		if db.engine == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(4242001)"); err != nil {
				return fmt.Errorf("lock for migration: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at BIGINT  NOT NULL
	)`)
		if err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		return nil
	})
}

// Migrate applies every embedded migration the database lacks, each in its
// own transaction. It refuses a database whose schema is newer than this
// binary: running old code on a newer schema could lose data.
func (db *DB) Migrate(ctx context.Context) error {
	ms, err := migrationsFor(db.engine)
	if err != nil {
		return err
	}
	if err := db.ensureMigrationTable(ctx); err != nil {
		return err
	}
	for {
		done, err := db.migrateOne(ctx, ms)
		if err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// migrateOne applies the next missing migration; it reports done when there
// is none. Several nodes may start at once: on PostgreSQL an advisory lock
// makes them take turns, on SQLite the immediate transaction does.
func (db *DB) migrateOne(ctx context.Context, ms []migration) (done bool, err error) {
	err = db.inTx(ctx, "migrate", func(tx *sqlx.Tx) error {
		if db.engine == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(4242001)"); err != nil {
				return fmt.Errorf("lock for migration: %w", err)
			}
		}
		var current int
		if err := tx.GetContext(ctx, &current, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current > len(ms) {
			return fmt.Errorf("database schema is at version %d, newer than this gchd knows (%d): upgrade gchd or restore a matching backup", current, len(ms))
		}
		if current == len(ms) {
			done = true
			return nil
		}
		m := ms[current]
		if _, err := tx.ExecContext(ctx, m.sql); err != nil {
			return fmt.Errorf("apply migration %s: %w", m.name, err)
		}
		_, err := tx.ExecContext(ctx, db.sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
			m.version, m.name, time.Now().UnixMicro())
		if err != nil {
			return fmt.Errorf("record migration %s: %w", m.name, err)
		}
		return nil
	})
	return done, err
}
