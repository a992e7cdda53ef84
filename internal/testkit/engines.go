package testkit

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/lib/pq" // the admin connection that creates test databases

	"gchd/storage"
)

// DefaultPostgres is the server tests use unless GCHD_TEST_POSTGRES names
// another (or "skip", to run SQLite only).
const DefaultPostgres = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Engines lists the engines every storage-visible test runs against.
func Engines() []storage.Engine { return []storage.Engine{storage.SQLite, storage.Postgres} }

// Each runs fn once per engine as a subtest named after the engine. fn
// makes its own database (DSN, Open, Config), so that each run starts
// empty; a PostgreSQL one is dropped when the subtest ends.
func Each(t *testing.T, fn func(t *testing.T, engine storage.Engine)) {
	t.Helper()
	for _, e := range Engines() {
		t.Run(string(e), func(t *testing.T) { fn(t, e) })
	}
}

// Open opens a migrated, empty database of the engine for one test.
func Open(t testing.TB, e storage.Engine) *storage.DB {
	t.Helper()
	return OpenDSN(t, DSN(t, e), storage.Options{})
}

// OpenDSN opens the database of dsn (from DSN, with accounts added, say)
// with opts, closed at the test's cleanup.
func OpenDSN(t testing.TB, dsn string, opts storage.Options) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("open %s: %v", dsn, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// DSN returns the setting of a fresh, empty database of the engine that
// lives as long as the test: a file in the test's temporary directory, or
// a PostgreSQL database created for it and dropped at its cleanup.
func DSN(t testing.TB, e storage.Engine) string {
	t.Helper()
	if e == storage.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), "gchd.db")
	}
	base := PostgresURL(t)
	admin := PostgresAdmin(t)
	name := "gchd_test_" + randomHex(t, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create test database: %v", err)
	}
	// Registered after PostgresAdmin's Close, so it runs before it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("GCHD_TEST_POSTGRES: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// PostgresURL is the maintenance database of the test server:
// GCHD_TEST_POSTGRES, or DefaultPostgres. It skips the test when that is
// "skip".
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("GCHD_TEST_POSTGRES")
	if base == "skip" {
		t.Skip("GCHD_TEST_POSTGRES=skip")
	}
	if base == "" {
		base = DefaultPostgres
	}
	return base
}

// PostgresAdmin connects to the test server's maintenance database, for
// tests that create, kick or inspect databases; it closes with the test.
func PostgresAdmin(t testing.TB) *sql.DB {
	t.Helper()
	base := PostgresURL(t)
	db, err := sql.Open("postgres", base)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v", base, err)
	}
	t.Cleanup(func() { db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n(start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, point GCHD_TEST_POSTGRES elsewhere, or set it to skip)", base, err)
	}
	return db
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("crypto/rand: %v", err)
	}
	return hex.EncodeToString(b)
}
