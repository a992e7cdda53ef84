package testkit

import (
	"context"
	"testing"

	"gchd/registrar"
	"gchd/storage"
)

// Password is the password tests give login's account.
func Password(login string) string { return "pw-" + login }

// AddAccounts creates an account for each login (password Password(login),
// display name the login) in the database dsn of domain, before a server
// opens it.
func AddAccounts(t testing.TB, dsn, domain string, logins ...string) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, dsn, storage.Options{})
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	defer db.Close()
	accounts := registrar.NewAccounts(db.AccountStore(), domain)
	for _, login := range logins {
		if err := accounts.Add(ctx, login, Password(login), login); err != nil {
			t.Fatalf("add account %s: %v", login, err)
		}
	}
}
