package storage_test

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"gchd/chat"
	"gchd/storage"
)

// logFixture is a group of a (sender), b and c (joined) with messages of a
// and b, every one due to all three.
type logFixture struct {
	id   chat.GroupID
	mids []chat.MID // in order; even ones by a, odd ones by b
}

func newLog(t *testing.T, s chat.Store, n int) logFixture {
	t.Helper()
	ctx := context.Background()
	var f logFixture
	mustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if f.id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: t0}); err != nil {
			return err
		}
		for _, l := range []string{"a", "b", "c"} {
			if err := tx.PutMember(ctx, chat.Member{Group: f.id, Login: l, DisplayName: l, Status: chat.StatusJoined, Since: t0}); err != nil {
				return err
			}
		}
		for i := 0; i < n; i++ {
			sender := []string{"a", "b"}[i%2]
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: f.id, Kind: chat.KindMessage, Sender: sender, Body: fmt.Sprint(i), Time: t0.Add(time.Duration(i) * time.Second)}, []string{"a", "b", "c"})
			if err != nil {
				return err
			}
			f.mids = append(f.mids, mid)
		}
		return nil
	})
	return f
}

func memberGroup(t *testing.T, s chat.Store, login string, id chat.GroupID) chat.MemberGroup {
	t.Helper()
	gs, err := s.GroupsOf(context.Background(), login)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.ID == id {
			return g
		}
	}
	t.Fatalf("%s is not in group %d: %+v", login, id, gs)
	return chat.MemberGroup{}
}

func TestEventsBefore(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		f := newLog(t, s, 10)
		newLog(t, s, 3) // another group's MIDs interleave nowhere but exist
		evs, err := s.EventsBefore(ctx, f.id, f.mids[7], 3)
		if err != nil || len(evs) != 3 || evs[0].MID != f.mids[4] || evs[2].MID != f.mids[6] || evs[0].Body != "4" {
			t.Fatalf("before %d: %+v, %v", f.mids[7], evs, err)
		}
		evs, err = s.EventsBefore(ctx, f.id, math.MaxUint64, 2)
		if err != nil || len(evs) != 2 || evs[1].MID != f.mids[9] {
			t.Fatalf("before the end: %+v, %v", evs, err)
		}
		if evs, err := s.EventsBefore(ctx, f.id, f.mids[0], 5); err != nil || len(evs) != 0 {
			t.Fatalf("before the first: %+v, %v", evs, err)
		}
	})
}

func TestReadMarkers(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		f := newLog(t, s, 10) // a sent 0, 2, 4, 6, 8; b sent 1, 3, 5, 7, 9
		at := t0.Add(time.Hour)
		if g := memberGroup(t, s, "c", f.id); g.Unread != 10 || g.LastMID != f.mids[9] || !g.LastAt.Equal(t0.Add(9*time.Second)) || g.ReadMID != 0 || g.Subject != "g" {
			t.Fatalf("c before reading: %+v", g)
		}
		if g := memberGroup(t, s, "a", f.id); g.Unread != 5 {
			t.Fatalf("a counts own messages: %+v", g)
		}
		// ReadUpTo marks every message due up to the MID, in one call.
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadUpTo(ctx, f.id, "c", f.mids[5], at) })
		if g := memberGroup(t, s, "c", f.id); g.Unread != 4 || g.ReadMID != f.mids[5] {
			t.Fatalf("c after ReadUpTo 5: %+v", g)
		}
		for i, mid := range f.mids {
			rs, _ := s.Receipts(ctx, mid)
			for _, r := range rs {
				if r.Login == "c" && (r.Read.IsZero() != (i > 5) || r.Confirmed.IsZero() != (i > 5)) {
					t.Fatalf("c's receipt of message %d: %+v", i, r)
				}
			}
		}
		if ps, _ := db.DeliveryStore().PendingFor(ctx, "c", 0, 100); len(ps) != 4 || ps[0].Event.MID != f.mids[6] {
			t.Fatalf("c's pending after ReadUpTo: %d, from %+v", len(ps), ps)
		}
		// Never back; a read one by one counts as read.
		mustUpdate(t, s, func(tx chat.Tx) error {
			if err := tx.ReadUpTo(ctx, f.id, "c", f.mids[1], at); err != nil {
				return err
			}
			return tx.SetReceipt(ctx, f.mids[7], "c", at, at)
		})
		if g := memberGroup(t, s, "c", f.id); g.Unread != 3 || g.ReadMID != f.mids[5] {
			t.Fatalf("c after going back and reading 7: %+v", g)
		}
		// ReadNewest moves only from the newest message of others.
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.id, "c", f.mids[8]) })
		if g := memberGroup(t, s, "c", f.id); g.ReadMID != f.mids[5] {
			t.Fatalf("ReadNewest of 8 with 9 after it moved the marker: %+v", g)
		}
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.id, "c", f.mids[9]) })
		if g := memberGroup(t, s, "c", f.id); g.ReadMID != f.mids[9] || g.Unread != 0 {
			t.Fatalf("after ReadNewest of 9: %+v", g)
		}
		// b's own 9 is no reason to hold b's marker at 8.
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.id, "b", f.mids[8]) })
		if g := memberGroup(t, s, "b", f.id); g.ReadMID != f.mids[8] || g.Unread != 0 {
			t.Fatalf("b after ReadNewest of 8: %+v", g)
		}
		// Deleted messages do not count.
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.DeleteMessage(ctx, f.mids[3]) })
		if g := memberGroup(t, s, "a", f.id); g.Unread != 4 {
			t.Fatalf("a after deleting 3: %+v", g)
		}
		// A member added later starts at the end of the log; one added
		// again keeps her marker.
		mustUpdate(t, s, func(tx chat.Tx) error {
			if err := tx.PutMember(ctx, chat.Member{Group: f.id, Login: "d", DisplayName: "d", Status: chat.StatusWaiting, Since: t0}); err != nil {
				return err
			}
			return tx.PutMember(ctx, chat.Member{Group: f.id, Login: "c", DisplayName: "c", Status: chat.StatusLeft, Since: t0})
		})
		if g := memberGroup(t, s, "d", f.id); g.ReadMID != f.mids[9] || g.Unread != 0 {
			t.Fatalf("d: %+v", g)
		}
		if gs, _ := s.GroupsOf(ctx, "c"); len(gs) != 0 {
			t.Fatalf("c left, yet lists %+v", gs)
		}
		mustUpdate(t, s, func(tx chat.Tx) error {
			return tx.PutMember(ctx, chat.Member{Group: f.id, Login: "c", DisplayName: "c", Status: chat.StatusJoined, Since: t0})
		})
		if g := memberGroup(t, s, "c", f.id); g.ReadMID != f.mids[9] {
			t.Fatalf("c back: %+v", g)
		}
	})
}

func TestSettleNotice(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		f := newLog(t, s, 2)
		var eg, dm chat.MID
		mustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			if eg, err = tx.AppendEvent(ctx, chat.Event{Group: f.id, Kind: chat.KindEditGroup, Sender: "a", Time: t0}, []string{"a", "b"}); err != nil {
				return err
			}
			if err := tx.DeleteMessage(ctx, f.mids[0]); err != nil {
				return err
			}
			dm, err = tx.AppendEvent(ctx, chat.Event{Group: f.id, Kind: chat.KindDeleteMessage, Sender: "a", Ref: f.mids[0], Time: t0}, []string{"a", "b", "c"})
			return err
		})
		settle := func(id chat.GroupID, mid chat.MID, login string) bool {
			t.Helper()
			var ok bool
			mustUpdate(t, s, func(tx chat.Tx) error {
				var err error
				ok, err = tx.SettleNotice(ctx, id, mid, login, t0, time.Time{})
				return err
			})
			return ok
		}
		pending := func(login string) []chat.MID {
			ps, _ := db.DeliveryStore().PendingFor(ctx, login, 0, 100)
			var out []chat.MID
			for _, p := range ps {
				out = append(out, p.Event.MID)
			}
			return out
		}
		for _, c := range []struct {
			id    chat.GroupID
			mid   chat.MID
			login string
			want  bool
		}{
			{f.id, eg, "c", false},        // not due to c
			{f.id + 1, eg, "b", false},    // another group
			{f.id, f.mids[1], "b", false}, // a message, not a notification
			{f.id, eg, "b", true},         // settled
			{f.id, eg, "b", true},         // and again
			{f.id, f.mids[0], "c", true},  // the deleted message's MID: its DM
			{f.id, dm, "b", true},         // the DM's own MID
			{f.id, f.mids[1] + 1000, "b", false},
		} {
			if got := settle(c.id, c.mid, c.login); got != c.want {
				t.Errorf("SettleNotice(%d, %d, %s) = %v, want %v", c.id, c.mid, c.login, got, c.want)
			}
		}
		if got := fmt.Sprint(pending("b")); got != fmt.Sprint([]chat.MID{f.mids[1]}) {
			t.Errorf("b's pending: %s, want only message 1", got)
		}
		if got := fmt.Sprint(pending("c")); got != fmt.Sprint([]chat.MID{f.mids[1]}) {
			t.Errorf("c's pending: %s, want only message 1", got)
		}
	})
}

// Members of a database from before read markers start at the newest
// message they read.
func TestReadMarkerMigration(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		f := newLog(t, s, 6)
		mustUpdate(t, s, func(tx chat.Tx) error {
			if err := tx.SetReceipt(ctx, f.mids[3], "c", t0, t0); err != nil {
				return err
			}
			return tx.SetReceipt(ctx, f.mids[1], "c", t0, t0)
		})
		for _, q := range []string{
			// Back to version 5: the later migrations first.
			"ALTER TABLE bindings DROP COLUMN pn_param",
			"ALTER TABLE bindings DROP COLUMN pn_prid",
			"ALTER TABLE bindings DROP COLUMN pn_provider",
			"DELETE FROM schema_migrations WHERE version = 7",
			"DROP INDEX events_dm_ref",
			"ALTER TABLE members DROP COLUMN read_mid",
			"DELETE FROM schema_migrations WHERE version = 6",
		} {
			if err := db.ExecForTest(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if err := db.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if g := memberGroup(t, s, "c", f.id); g.ReadMID != f.mids[3] || g.Unread != 2 {
			t.Fatalf("c after the migration: %+v, want the marker at %d and 2 unread", g, f.mids[3])
		}
		if g := memberGroup(t, s, "b", f.id); g.ReadMID != 0 || g.Unread != 3 {
			t.Fatalf("b after the migration: %+v", g)
		}
	})
}
