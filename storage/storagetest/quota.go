package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gchd/chat"
)

// PendingFrom counts only pending unsolicited events (NG, DG, DIR) from the
// sender to each recipient, in chunks of every size, never the sender's own.
func testPendingFrom(t *testing.T, stores Stores) {
	ctx := context.Background()
	cs, ds := stores.Chat, stores.Deliveries
	var logins []string
	for i := range 41 {
		logins = append(logins, fmt.Sprintf("r%d", i))
	}
	var settle chat.MID
	MustUpdate(t, cs, func(tx chat.Tx) error {
		for _, k := range []chat.Kind{chat.KindNewGroup, chat.KindDeleteGroup, chat.KindDirect, chat.KindMessage, chat.KindEditGroup} {
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: k, Sender: "x", Body: "b", Time: T0}, append([]string{"x"}, logins...))
			if err != nil {
				return err
			}
			if k == chat.KindDirect {
				settle = mid
			}
		}
		_, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: chat.KindNewGroup, Sender: "y", Body: "b", Time: T0}, logins)
		return err
	})
	// r0 took the direct message: it no longer waits.
	if err := ds.Settle(ctx, []chat.Settlement{{MID: settle, Login: "r0", State: chat.DeliveryDone, At: T0, Attempts: 1}}); err != nil {
		t.Fatal(err)
	}
	MustUpdate(t, cs, func(tx chat.Tx) error {
		n, err := tx.PendingFrom(ctx, "x", append([]string{"x", "nobody"}, logins...))
		if err != nil {
			return err
		}
		if n["r0"] != 2 || n["r40"] != 3 || n["x"] != 0 || n["nobody"] != 0 || len(n) != len(logins) {
			t.Errorf("pending from x: %v", n)
		}
		if err := tx.LockSender(ctx, "x"); err != nil {
			return err
		}
		return tx.LockSender(ctx, "x") // again in the same transaction: no deadlock
	})
}

// CountCreation counts the creations within the window and forgets older
// ones; a refused (rolled back) creation is not counted.
func testCountCreation(t *testing.T, stores Stores) {
	ctx := context.Background()
	cs := stores.Chat
	count := func(at time.Time) (n int) {
		MustUpdate(t, cs, func(tx chat.Tx) (err error) {
			n, err = tx.CountCreation(ctx, "a", at, at.Add(-time.Hour))
			return err
		})
		return n
	}
	for i := range 3 {
		if n := count(T0.Add(time.Duration(i) * time.Minute)); n != i+1 {
			t.Fatalf("creation %d counted %d", i+1, n)
		}
	}
	errRefused := fmt.Errorf("refused")
	cs.Update(ctx, func(tx chat.Tx) error {
		tx.CountCreation(ctx, "a", T0.Add(4*time.Minute), T0)
		return errRefused
	})
	if n := count(T0.Add(61 * time.Minute)); n != 3 {
		t.Fatalf("an hour after the first: %d, want 3 (the 2nd, 3rd and this one)", n)
	}
}
