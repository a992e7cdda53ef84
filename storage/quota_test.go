package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gchd/chat"
	"gchd/storage"
)

// PendingFrom counts only pending unsolicited events (NG, DG, DIR) from the
// sender to each recipient, in chunks of every size, never the sender's own.
func TestPendingFrom(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cs, ds := db.ChatStore(), db.DeliveryStore()
		var logins []string
		for i := range 41 {
			logins = append(logins, fmt.Sprintf("r%d", i))
		}
		var settle chat.MID
		mustUpdate(t, cs, func(tx chat.Tx) error {
			for _, k := range []chat.Kind{chat.KindNewGroup, chat.KindDeleteGroup, chat.KindDirect, chat.KindMessage, chat.KindEditGroup} {
				mid, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: k, Sender: "x", Body: "b", Time: t0}, append([]string{"x"}, logins...))
				if err != nil {
					return err
				}
				if k == chat.KindDirect {
					settle = mid
				}
			}
			_, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: chat.KindNewGroup, Sender: "y", Body: "b", Time: t0}, logins)
			return err
		})
		// r0 took the direct message: it no longer waits.
		if err := ds.Settle(ctx, []chat.Settlement{{MID: settle, Login: "r0", State: chat.DeliveryDone, At: t0, Attempts: 1}}); err != nil {
			t.Fatal(err)
		}
		mustUpdate(t, cs, func(tx chat.Tx) error {
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
	})
}

// CountCreation counts the creations within the window and forgets older
// ones; a refused (rolled back) creation is not counted.
func TestCountCreation(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cs := db.ChatStore()
		count := func(at time.Time) (n int) {
			mustUpdate(t, cs, func(tx chat.Tx) (err error) {
				n, err = tx.CountCreation(ctx, "a", at, at.Add(-time.Hour))
				return err
			})
			return n
		}
		for i := range 3 {
			if n := count(t0.Add(time.Duration(i) * time.Minute)); n != i+1 {
				t.Fatalf("creation %d counted %d", i+1, n)
			}
		}
		errRefused := fmt.Errorf("refused")
		cs.Update(ctx, func(tx chat.Tx) error {
			tx.CountCreation(ctx, "a", t0.Add(4*time.Minute), t0)
			return errRefused
		})
		if n := count(t0.Add(61 * time.Minute)); n != 3 {
			t.Fatalf("an hour after the first: %d, want 3 (the 2nd, 3rd and this one)", n)
		}
	})
}

// PurgeDeleted removes a deleted group's DG once no delivery of it is
// pending, and nothing else.
func TestPurgeDeleted(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		cs, ds := db.ChatStore(), db.DeliveryStore()
		var live, dead chat.GroupID
		var dg chat.MID
		mustUpdate(t, cs, func(tx chat.Tx) (err error) {
			if live, err = tx.CreateGroup(ctx, chat.Group{Subject: "live", Owner: "a", Created: t0}); err != nil {
				return err
			}
			if dead, err = tx.CreateGroup(ctx, chat.Group{Subject: "dead", Owner: "a", Created: t0}); err != nil {
				return err
			}
			for _, id := range []chat.GroupID{live, dead} {
				if _, err := tx.AppendEvent(ctx, chat.Event{Group: id, Kind: chat.KindMessage, Sender: "a", Body: "m", Time: t0}, []string{"b"}); err != nil {
					return err
				}
			}
			if _, err := tx.AppendEvent(ctx, chat.Event{Kind: chat.KindDirect, Sender: "a", Body: "d", Time: t0}, []string{"b"}); err != nil {
				return err
			}
			if dg, err = tx.AppendEvent(ctx, chat.Event{Group: dead, Kind: chat.KindDeleteGroup, Sender: "a", Body: "delGroup", Time: t0}, []string{"a", "b"}); err != nil {
				return err
			}
			return tx.DeleteGroup(ctx, dead)
		})
		fp, _ := db.GroupFootprint(ctx, dead)
		if fp["events"] != 1 || fp["deliveries"] != 2 {
			t.Fatalf("after DeleteGroup: %v, want the DG and its 2 deliveries", fp)
		}
		if n, err := ds.PurgeDeleted(ctx); err != nil || n != 0 {
			t.Fatalf("purge while DG is pending: %d, %v", n, err)
		}
		ds.Settle(ctx, []chat.Settlement{{MID: dg, Login: "a", State: chat.DeliveryDone, At: t0, Attempts: 1},
			{MID: dg, Login: "b", State: chat.DeliveryFailed, At: t0, Attempts: 1}})
		if n, err := ds.PurgeDeleted(ctx); err != nil || n != 1 {
			t.Fatalf("purge once settled: %d, %v", n, err)
		}
		fp, _ = db.GroupFootprint(ctx, dead)
		for k, n := range fp {
			if n != 0 {
				t.Errorf("deleted group: %d %s left", n, k)
			}
		}
		if fp, _ = db.GroupFootprint(ctx, live); fp["events"] != 1 || fp["deliveries"] != 1 {
			t.Errorf("live group touched: %v", fp)
		}
		if p, _ := ds.PendingFor(ctx, "b", 0, 10); len(p) != 2 {
			t.Errorf("b's pending deliveries %d, want the live message and the direct one", len(p))
		}
	})
}
