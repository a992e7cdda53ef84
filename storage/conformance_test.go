package storage_test

import (
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// Every engine keeps the promises of the store interfaces.
func TestConformance(t *testing.T) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		t.Parallel()
		storagetest.Run(t, func(t *testing.T) storagetest.Stores {
			db := testkit.Open(t, e)
			return storagetest.Stores{Chat: db.ChatStore(), Deliveries: db.DeliveryStore(),
				Accounts: db.AccountStore(), Bindings: db.BindingStore()}
		})
	})
}
