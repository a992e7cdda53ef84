package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gchd/registrar"
)

func testAccounts(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Accounts
	a := registrar.Account{Login: "alice", DisplayName: "Alice", Realm: "r", HA1MD5: "m", HA1SHA256: "s", Created: T0, Updated: T0}
	if err := s.CreateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccount(ctx, a); !errors.Is(err, registrar.ErrAccountExists) {
		t.Fatalf("duplicate: %v", err)
	}
	got, err := s.Account(ctx, "alice")
	if err != nil || got != a {
		t.Fatalf("account = %+v, %v", got, err)
	}
	a.HA1MD5, a.Updated = "m2", T0.Add(time.Hour)
	if err := s.UpdateAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Account(ctx, "alice"); got != a {
		t.Fatalf("after update = %+v", got)
	}
	if err := s.UpdateAccount(ctx, registrar.Account{Login: "nobody"}); !errors.Is(err, registrar.ErrNoAccount) {
		t.Fatalf("update missing: %v", err)
	}
	added, updated, err := s.PutAccounts(ctx, []registrar.Account{a, {Login: "bob", Realm: "r", Created: T0, Updated: T0}})
	if err != nil || added != 1 || updated != 1 {
		t.Fatalf("put = %d, %d, %v", added, updated, err)
	}
	list, err := s.Accounts(ctx)
	if err != nil || len(list) != 2 || list[0].Login != "alice" || list[1].Login != "bob" {
		t.Fatalf("list = %+v, %v", list, err)
	}
	if err := s.DeleteAccount(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, "bob"); !errors.Is(err, registrar.ErrNoAccount) {
		t.Fatalf("delete missing: %v", err)
	}
	if _, err := s.Account(ctx, "bob"); !errors.Is(err, registrar.ErrNoAccount) {
		t.Fatalf("deleted account: %v", err)
	}
}

// Concurrent lookups share queries (accountreads.go): each caller still
// gets its own account, or ErrNoAccount, whatever batch it was read in,
// the same login asked for twice in a batch included.
func testAccountReadsConcurrent(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Accounts
	var accounts []registrar.Account
	for i := range 50 {
		a := registrar.Account{Login: fmt.Sprintf("user%02d", i), Realm: "r", HA1MD5: fmt.Sprint("m", i), HA1SHA256: fmt.Sprint("s", i),
			Created: T0, Updated: T0}
		accounts = append(accounts, a)
	}
	if _, _, err := s.PutAccounts(ctx, accounts); err != nil {
		t.Fatal(err)
	}
	const callers = 400
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := i % 70 // 50 to 69 have no account
			login := fmt.Sprintf("user%02d", n)
			got, err := s.Account(ctx, login)
			switch {
			case n >= 50 && !errors.Is(err, registrar.ErrNoAccount):
				errs <- fmt.Errorf("%s: %+v, %v; want ErrNoAccount", login, got, err)
			case n < 50 && (err != nil || got != accounts[n]):
				errs <- fmt.Errorf("%s: %+v, %v; want %+v", login, got, err, accounts[n])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
