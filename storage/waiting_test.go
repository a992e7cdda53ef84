package storage_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"gchd/chat"
	"gchd/internal/testkit"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// WaitingAfter finds the members with deliveries waiting for a
// registration among events after a MID: for everyone, for the logins
// asked about, and not for deliveries that are done or have a retry time.
func TestWaitingAfter(t *testing.T) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		db := testkit.Open(t, e)
		ctx := context.Background()
		f := storagetest.NewLog(t, db.ChatStore(), 3) // to a, b and c each
		ds := db.DeliveryStore()
		// MID 2: a's is done, b's waits for a retry time; c's waits.
		err := ds.Settle(ctx, []chat.Settlement{
			{MID: f.MIDs[1], Login: "a", State: chat.DeliveryDone, At: storagetest.T0},
			{MID: f.MIDs[1], Login: "b", State: chat.DeliveryPending, At: storagetest.T0, Next: storagetest.T0.Add(time.Minute), Attempts: 1},
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name   string
			after  chat.MID
			logins []string
			want   []string
		}{
			{"everyone", 0, nil, []string{"a", "b", "c"}},
			{"after the first", f.MIDs[0], nil, []string{"a", "b", "c"}}, // MID 3 waits for all
			{"after the last", f.MIDs[2], nil, nil},
			{"asked about", 0, []string{"b", "x"}, []string{"b"}},
			{"asked about, after the second", f.MIDs[1], []string{"c"}, []string{"c"}},
			{"nobody asked about", 0, []string{}, nil},
		} {
			got, err := db.WaitingAfter(ctx, c.after, c.logins, 100)
			if err != nil {
				t.Fatal(err)
			}
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("%s: %q, want %q", c.name, got, c.want)
			}
		}
	})
}
