package storage_test

import (
	"context"
	"testing"

	"gchd/chat"
	"gchd/storage"
)

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
