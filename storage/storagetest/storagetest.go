// Package storagetest is the conformance suite of gchd's stores: what chat
// and registrar may rely on of the interfaces they define (chat.Store,
// chat.DeliveryStore, registrar.AccountStore, registrar.BindingStore),
// checked against any implementation. An engine's test calls Run with a
// function that opens fresh, empty stores of it:
//
//	testkit.Each(t, func(t *testing.T, e storage.Engine) {
//		storagetest.Run(t, func(t *testing.T) storagetest.Stores { ... })
//	})
package storagetest

import (
	"testing"

	"gchd/chat"
	"gchd/registrar"
)

// Stores are the stores of one empty database.
type Stores struct {
	Chat       chat.Store
	Deliveries chat.DeliveryStore
	Accounts   registrar.AccountStore
	Bindings   registrar.BindingStore
}

// conformance lists the suite's tests by name.
var conformance = []struct {
	name string
	test func(t *testing.T, stores Stores)
}{
	{"GroupRoundTrip", testGroupRoundTrip},
	{"MembersAndGuests", testMembersAndGuests},
	{"EventsReceiptsAndCascade", testEventsReceiptsAndCascade},
	{"GroupsWith", testGroupsWith},
	{"UpdateRollsBack", testUpdateRollsBack},
	{"ConcurrentUpdatesFailAlone", testConcurrentUpdatesFailAlone},
	{"UpdateInCommitsInOrder", testUpdateInCommitsInOrder},
	{"UpdateInFailsAlone", testUpdateInFailsAlone},
	{"UpdateInLocksOneGroup", testUpdateInLocksOneGroup},
	{"UpdateInMissingGroup", testUpdateInMissingGroup},
	{"EventsFor", testEventsFor},
	{"EventsBefore", testEventsBefore},
	{"ReadMarkers", testReadMarkers},
	{"SettleNotice", testSettleNotice},
	{"PendingFrom", testPendingFrom},
	{"CountCreation", testCountCreation},
	{"DeliveryRowsForLargeGroups", testDeliveryRowsForLargeGroups},
	{"DeliveryBookkeeping", testDeliveryBookkeeping},
	{"Accounts", testAccounts},
	{"AccountReadsConcurrent", testAccountReadsConcurrent},
	{"QueuedBindingsKeepOrder", testQueuedBindingsKeepOrder},
}

// Run runs every test of the suite as a parallel subtest, each on the
// stores open returns for it; open makes new, empty ones each time.
func Run(t *testing.T, open func(t *testing.T) Stores) {
	t.Helper()
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t, open(t))
		})
	}
}
