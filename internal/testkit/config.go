package testkit

import (
	"testing"
	"time"

	"gchd/configs"
	"gchd/storage"
)

// Domain is the SIP domain of every test server.
const Domain = "test.local"

// Config is the configuration of a test server of Domain on a fresh
// database of the engine, listening on ephemeral loopback ports.
func Config(t testing.TB, engine storage.Engine) configs.Config {
	t.Helper()
	cfg := configs.Default()
	cfg.Domain = Domain
	cfg.Database = DSN(t, engine)
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.SIP.Addr = "127.0.0.1:0"
	// The tests' databases are thrown away; a commit need not reach the disk.
	cfg.Storage.SQLiteSynchronous = "NORMAL"
	cfg.Shutdown.Grace = 5 * time.Second
	// Tests send hundreds of requests a second from one address; the
	// limits have tests of their own.
	cfg.Limits = configs.Limits{}
	return cfg
}
