// Package storagetest opens real, throw-away databases for tests: a SQLite
// file in the test's temporary directory, or a PostgreSQL database created
// for the test on the server named by GCHD_TEST_POSTGRES and dropped after it.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
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

// Engines lists the engines every storage test runs against.
func Engines() []storage.Engine { return []storage.Engine{storage.SQLite, storage.Postgres} }

// Each runs fn once per engine as a subtest.
func Each(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, e := range Engines() {
		t.Run(string(e), func(t *testing.T) { fn(t, DSN(t, e)) })
	}
}

// Open opens a migrated, empty database of the engine for one test.
func Open(t testing.TB, e storage.Engine) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), DSN(t, e), storage.Options{})
	if err != nil {
		t.Fatalf("open %s: %v", e, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// DSN returns the setting of a fresh, empty database of the engine that
// lives as long as the test.
func DSN(t testing.TB, e storage.Engine) string {
	t.Helper()
	if e == storage.SQLite {
		return "sqlite:" + filepath.Join(t.TempDir(), "gchd.db")
	}
	base := os.Getenv("GCHD_TEST_POSTGRES")
	if base == "skip" {
		t.Skip("GCHD_TEST_POSTGRES=skip")
	}
	if base == "" {
		base = DefaultPostgres
	}
	admin, err := adminConn(base)
	if err != nil {
		t.Fatalf("PostgreSQL at %s: %v\n(start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start, point GCHD_TEST_POSTGRES elsewhere, or set it to skip)", base, err)
	}
	name := "gchd_test_" + randomHex(6)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		t.Fatalf("create test database: %v", err)
	}
	t.Cleanup(func() {
		defer admin.Close()
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

// adminConn connects to the maintenance database.
func adminConn(dsn string) (*sql.DB, error) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return hex.EncodeToString(b)
}
