package storagetest

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"gchd/chat"
)

// An event's delivery rows are written in chunks; every recipient gets one.
func testDeliveryRowsForLargeGroups(t *testing.T, stores Stores) {
	ctx := context.Background()
	for _, n := range []int{1, 7, 8, 9, 32, 41, 77} {
		var logins []string
		for i := range n {
			logins = append(logins, fmt.Sprintf("m%d-%d", n, i))
		}
		MustUpdate(t, stores.Chat, func(tx chat.Tx) error {
			_, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: chat.KindMessage, Sender: "a", Body: "m", Time: T0}, logins)
			return err
		})
		with, err := stores.Deliveries.WithPending(ctx, logins)
		if err != nil || len(with) != n {
			t.Fatalf("%d recipients: %d with a pending delivery, %v", n, len(with), err)
		}
	}
}

func testDeliveryBookkeeping(t *testing.T, stores Stores) {
	ctx := context.Background()
	cs, ds := stores.Chat, stores.Deliveries
	var mids []chat.MID
	MustUpdate(t, cs, func(tx chat.Tx) error {
		for i := 0; i < 4; i++ {
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: 7, Kind: chat.KindMessage, Sender: "a", Body: "m", Time: T0.Add(time.Duration(i) * time.Hour)}, []string{"b", "c"})
			if err != nil {
				return err
			}
			mids = append(mids, mid)
		}
		return nil
	})
	ps, err := ds.PendingFor(ctx, "b", 0, 3)
	if err != nil || len(ps) != 3 || ps[0].Event.MID != mids[0] || ps[2].Event.MID != mids[2] || ps[0].Event.Body != "m" {
		t.Fatalf("pending for b = %+v, %v", ps, err)
	}
	if ps, _ := ds.PendingFor(ctx, "b", mids[2], 3); len(ps) != 1 || ps[0].Event.MID != mids[3] {
		t.Fatalf("second page = %+v", ps)
	}
	with, err := ds.WithPending(ctx, []string{"a", "b", "nobody", "c"})
	slices.Sort(with)
	if err != nil || !slices.Equal(with, []string{"b", "c"}) {
		t.Fatalf("with pending = %v, %v", with, err)
	}
	cf := T0.Add(time.Minute)
	err = ds.Settle(ctx, []chat.Settlement{
		{MID: mids[0], Login: "b", State: chat.DeliveryDone, At: cf, Attempts: 1},
		{MID: mids[1], Login: "b", State: chat.DeliveryFailed, At: cf, Attempts: 1},
		{MID: mids[2], Login: "b", State: chat.DeliveryPending, At: cf, Next: T0.Add(2 * time.Hour), Attempts: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	if ps, _ := ds.PendingFor(ctx, "b", 0, 10); len(ps) != 2 || ps[0].Event.MID != mids[2] || ps[0].Attempts != 3 {
		t.Fatalf("pending after settle = %+v", ps)
	}
	// PendingOf names only those still due the event: b took it.
	if ps, err := ds.PendingOf(ctx, mids[0], []string{"b", "c", "nobody"}); err != nil || len(ps) != 1 || ps[0].Login != "c" || ps[0].Event.MID != mids[0] {
		t.Fatalf("pending of the first event = %+v, %v; want c's only", ps, err)
	}
	if ps, err := ds.PendingOf(ctx, mids[2], []string{"b"}); err != nil || len(ps) != 1 || ps[0].Attempts != 3 || ps[0].Event.Body != "m" {
		t.Fatalf("pending of a retried event = %+v, %v", ps, err)
	}
	rs, _ := cs.Receipts(ctx, mids[0])
	if len(rs) != 2 || rs[0].Login != "b" || rs[0].Confirmed != cf {
		t.Fatalf("receipts after delivery = %+v", rs)
	}
	// A later delivery does not move cf; a settled row is not reopened.
	ds.Settle(ctx, []chat.Settlement{{MID: mids[0], Login: "b", State: chat.DeliveryPending, At: cf, Next: T0, Attempts: 9}})
	if rs, _ := cs.Receipts(ctx, mids[0]); rs[0].Confirmed != cf {
		t.Fatalf("cf moved: %+v", rs)
	}
	due, err := ds.Due(ctx, T0.Add(2*time.Hour), 10)
	if err != nil || len(due) != 1 || due[0].Event.MID != mids[2] || due[0].Login != "b" {
		t.Fatalf("due = %+v, %v", due, err)
	}
	if due, _ := ds.Due(ctx, T0.Add(time.Hour), 10); len(due) != 0 {
		t.Fatalf("due too early = %+v", due)
	}
	c, err := ds.PendingSummary(ctx)
	if err != nil || c.Waiting != 5 || c.Retrying != 1 || c.Oldest != T0 {
		t.Fatalf("summary = %+v, %v; want 5 waiting and 1 retrying since %v", c, err, T0)
	}
	// Events older than T0+90min expire: c's first two, nothing of b's
	// (b's first two are settled).
	expired, err := ds.Expire(ctx, T0.Add(90*time.Minute))
	if err != nil || expired != 2 {
		t.Fatalf("expired = %d, %v", expired, err)
	}
	if ps, _ := ds.PendingFor(ctx, "c", 0, 10); len(ps) != 2 || ps[0].Event.MID != mids[2] {
		t.Fatalf("c after expiry = %+v", ps)
	}
	// Settle handles batches larger than one statement's chunk.
	var big []chat.Settlement
	for i := 0; i < 2500; i++ {
		big = append(big, chat.Settlement{MID: mids[3], Login: "c", State: chat.DeliveryDone, At: cf, Attempts: 1})
	}
	if err := ds.Settle(ctx, big); err != nil {
		t.Fatal(err)
	}
	if ps, _ := ds.PendingFor(ctx, "c", 0, 10); len(ps) != 1 {
		t.Fatalf("c after big batch = %+v", ps)
	}
}
