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
	names := make(map[string]string, len(logins))
	for _, l := range logins {
		names[l] = l
	}
	AddNamedAccounts(t, dsn, domain, names)
}

// AddNamedAccounts is AddAccounts with a display name for each login.
func AddNamedAccounts(t testing.TB, dsn, domain string, names map[string]string) {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, dsn, storage.Options{})
	if err != nil {
		t.Fatalf("open database: %v", err)
	}
	defer db.Close()
	accounts := registrar.NewAccounts(db.AccountStore(), domain)
	for login, dn := range names {
		if err := accounts.Add(ctx, login, Password(login), dn); err != nil {
			t.Fatalf("add account %s: %v", login, err)
		}
	}
}
