package registrar_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

func TestHashHA1(t *testing.T) {
	tests := []struct{ alg, user, realm, pass, want string }{
		// RFC 2617 section 3.5.
		{registrar.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life", "939e7578ed9e3c518a452acee763bce9"},
		// RFC 7616 section 3.9.1.
		{registrar.SHA256, "Mufasa", "http-auth@example.org", "Circle of Life", "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"},
	}
	for _, tt := range tests {
		if got := registrar.HashHA1(tt.alg, tt.user, tt.realm, tt.pass); got != tt.want {
			t.Errorf("HA1(%s) = %s, want %s", tt.alg, got, tt.want)
		}
	}
}

func TestAccounts(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		acc := registrar.NewAccounts(db.AccountStore(), "example.org")
		if err := acc.Add(ctx, "alice", "s3cret", "Alice"); err != nil {
			t.Fatal(err)
		}
		if err := acc.Add(ctx, "alice", "other", ""); !errors.Is(err, registrar.ErrAccountExists) {
			t.Fatalf("second add: %v", err)
		}
		got, err := acc.Lookup(ctx, "alice")
		if err != nil || got.HA1MD5 != registrar.HashHA1("MD5", "alice", "example.org", "s3cret") ||
			got.HA1("SHA-256") != registrar.HashHA1("SHA-256", "alice", "example.org", "s3cret") || got.DisplayName != "Alice" {
			t.Fatalf("stored account = %+v, %v", got, err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "s3cret"); err != nil {
			t.Fatalf("right password: %v", err)
		}
		for _, c := range [][2]string{{"alice", "S3cret"}, {"alice", ""}, {"bob", "s3cret"}} {
			if _, err := acc.Authenticate(ctx, c[0], c[1]); !errors.Is(err, registrar.ErrBadCredentials) {
				t.Errorf("Authenticate(%q, %q) = %v, want ErrBadCredentials", c[0], c[1], err)
			}
		}
		if err := acc.SetPassword(ctx, "alice", "new"); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "s3cret"); !errors.Is(err, registrar.ErrBadCredentials) {
			t.Fatalf("old password after passwd: %v", err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "new"); err != nil {
			t.Fatalf("new password: %v", err)
		}
		// An account made for another realm no longer authenticates.
		other := registrar.NewAccounts(db.AccountStore(), "other.org")
		if _, err := other.Authenticate(ctx, "alice", "new"); !errors.Is(err, registrar.ErrBadCredentials) {
			t.Fatalf("realm changed: %v", err)
		}
		for _, p := range []string{"", "a\nb", string(make([]byte, 129))} {
			if err := acc.Add(ctx, "carol", p, ""); !errors.Is(err, registrar.ErrBadPassword) {
				t.Errorf("password %q: %v", p, err)
			}
		}
		if err := acc.Delete(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "new"); !errors.Is(err, registrar.ErrBadCredentials) {
			t.Fatalf("deleted account: %v", err)
		}
	})
}

// The lookup cache answers repeated lookups without the store, forgets an
// account changed or deleted through the same Accounts at once, and sees a
// change made elsewhere (another process on the same database) after its
// ttl.
func TestAccountsLookupCache(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		const ttl = 200 * time.Millisecond
		acc := registrar.NewAccounts(db.AccountStore(), "example.org", registrar.WithLookupCache(ttl))
		other := registrar.NewAccounts(db.AccountStore(), "example.org") // the CLI's view
		if err := acc.Add(ctx, "alice", "one", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "one"); err != nil {
			t.Fatalf("authenticate: %v", err)
		}

		// Changed elsewhere: the old password works until the ttl ends.
		if err := other.SetPassword(ctx, "alice", "two"); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "one"); err != nil {
			t.Fatalf("within the ttl the cached password still works: %v", err)
		}
		time.Sleep(ttl + 50*time.Millisecond)
		if _, err := acc.Authenticate(ctx, "alice", "one"); !errors.Is(err, registrar.ErrBadCredentials) {
			t.Fatalf("old password after the ttl: %v", err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "two"); err != nil {
			t.Fatalf("new password after the ttl: %v", err)
		}

		// Changed here: at once.
		if err := acc.SetPassword(ctx, "alice", "three"); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "alice", "two"); !errors.Is(err, registrar.ErrBadCredentials) {
			t.Fatalf("password changed through the cache: old one gives %v", err)
		}
		if err := acc.Delete(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Lookup(ctx, "alice"); !errors.Is(err, registrar.ErrNoAccount) {
			t.Fatalf("deleted through the cache: lookup gives %v", err)
		}
		// Unknown logins are never cached: an account added elsewhere is
		// usable at once.
		if err := other.Add(ctx, "bob", "pw", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := acc.Authenticate(ctx, "bob", "pw"); err != nil {
			t.Fatalf("account added elsewhere: %v", err)
		}
	})
}
