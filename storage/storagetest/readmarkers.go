package storagetest

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"gchd/chat"
)

func testEventsBefore(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	f := NewLog(t, s, 10)
	NewLog(t, s, 3) // another group's MIDs interleave nowhere but exist
	evs, err := s.EventsBefore(ctx, f.ID, f.MIDs[7], 3)
	if err != nil || len(evs) != 3 || evs[0].MID != f.MIDs[4] || evs[2].MID != f.MIDs[6] || evs[0].Body != "4" {
		t.Fatalf("before %d: %+v, %v", f.MIDs[7], evs, err)
	}
	evs, err = s.EventsBefore(ctx, f.ID, math.MaxUint64, 2)
	if err != nil || len(evs) != 2 || evs[1].MID != f.MIDs[9] {
		t.Fatalf("before the end: %+v, %v", evs, err)
	}
	if evs, err := s.EventsBefore(ctx, f.ID, f.MIDs[0], 5); err != nil || len(evs) != 0 {
		t.Fatalf("before the first: %+v, %v", evs, err)
	}
}

func testReadMarkers(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	f := NewLog(t, s, 10) // a sent 0, 2, 4, 6, 8; b sent 1, 3, 5, 7, 9
	at := T0.Add(time.Hour)
	if g := MemberGroup(t, s, "c", f.ID); g.Unread != 10 || g.LastMID != f.MIDs[9] || !g.LastAt.Equal(T0.Add(9*time.Second)) || g.ReadMID != 0 || g.Subject != "g" {
		t.Fatalf("c before reading: %+v", g)
	}
	if g := MemberGroup(t, s, "a", f.ID); g.Unread != 5 {
		t.Fatalf("a counts own messages: %+v", g)
	}
	// ReadUpTo marks every message due up to the MID, in one call.
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadUpTo(ctx, f.ID, "c", f.MIDs[5], at) })
	if g := MemberGroup(t, s, "c", f.ID); g.Unread != 4 || g.ReadMID != f.MIDs[5] {
		t.Fatalf("c after ReadUpTo 5: %+v", g)
	}
	for i, mid := range f.MIDs {
		rs, _ := s.Receipts(ctx, mid)
		for _, r := range rs {
			if r.Login == "c" && (r.Read.IsZero() != (i > 5) || r.Confirmed.IsZero() != (i > 5)) {
				t.Fatalf("c's receipt of message %d: %+v", i, r)
			}
		}
	}
	if ps, _ := stores.Deliveries.PendingFor(ctx, "c", 0, 100); len(ps) != 4 || ps[0].Event.MID != f.MIDs[6] {
		t.Fatalf("c's pending after ReadUpTo: %d, from %+v", len(ps), ps)
	}
	// Never back; a read one by one counts as read.
	MustUpdate(t, s, func(tx chat.Tx) error {
		if err := tx.ReadUpTo(ctx, f.ID, "c", f.MIDs[1], at); err != nil {
			return err
		}
		return tx.SetReceipt(ctx, f.MIDs[7], "c", at, at)
	})
	if g := MemberGroup(t, s, "c", f.ID); g.Unread != 3 || g.ReadMID != f.MIDs[5] {
		t.Fatalf("c after going back and reading 7: %+v", g)
	}
	// ReadNewest moves only from the newest message of others.
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.ID, "c", f.MIDs[8]) })
	if g := MemberGroup(t, s, "c", f.ID); g.ReadMID != f.MIDs[5] {
		t.Fatalf("ReadNewest of 8 with 9 after it moved the marker: %+v", g)
	}
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.ID, "c", f.MIDs[9]) })
	if g := MemberGroup(t, s, "c", f.ID); g.ReadMID != f.MIDs[9] || g.Unread != 0 {
		t.Fatalf("after ReadNewest of 9: %+v", g)
	}
	// b's own 9 is no reason to hold b's marker at 8.
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.ReadNewest(ctx, f.ID, "b", f.MIDs[8]) })
	if g := MemberGroup(t, s, "b", f.ID); g.ReadMID != f.MIDs[8] || g.Unread != 0 {
		t.Fatalf("b after ReadNewest of 8: %+v", g)
	}
	// Deleted messages do not count.
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.DeleteMessage(ctx, f.MIDs[3]) })
	if g := MemberGroup(t, s, "a", f.ID); g.Unread != 4 {
		t.Fatalf("a after deleting 3: %+v", g)
	}
	// A member added later starts at the end of the log; one added
	// again keeps her marker.
	MustUpdate(t, s, func(tx chat.Tx) error {
		if err := tx.PutMember(ctx, chat.Member{Group: f.ID, Login: "d", DisplayName: "d", Status: chat.StatusWaiting, Since: T0}); err != nil {
			return err
		}
		return tx.PutMember(ctx, chat.Member{Group: f.ID, Login: "c", DisplayName: "c", Status: chat.StatusLeft, Since: T0})
	})
	if g := MemberGroup(t, s, "d", f.ID); g.ReadMID != f.MIDs[9] || g.Unread != 0 {
		t.Fatalf("d: %+v", g)
	}
	if gs, _ := s.GroupsOf(ctx, "c"); len(gs) != 0 {
		t.Fatalf("c left, yet lists %+v", gs)
	}
	MustUpdate(t, s, func(tx chat.Tx) error {
		return tx.PutMember(ctx, chat.Member{Group: f.ID, Login: "c", DisplayName: "c", Status: chat.StatusJoined, Since: T0})
	})
	if g := MemberGroup(t, s, "c", f.ID); g.ReadMID != f.MIDs[9] {
		t.Fatalf("c back: %+v", g)
	}
}

func testSettleNotice(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	f := NewLog(t, s, 2)
	var eg, dm chat.MID
	MustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if eg, err = tx.AppendEvent(ctx, chat.Event{Group: f.ID, Kind: chat.KindEditGroup, Sender: "a", Time: T0}, []string{"a", "b"}); err != nil {
			return err
		}
		if err := tx.DeleteMessage(ctx, f.MIDs[0]); err != nil {
			return err
		}
		dm, err = tx.AppendEvent(ctx, chat.Event{Group: f.ID, Kind: chat.KindDeleteMessage, Sender: "a", Ref: f.MIDs[0], Time: T0}, []string{"a", "b", "c"})
		return err
	})
	settle := func(id chat.GroupID, mid chat.MID, login string) bool {
		t.Helper()
		var ok bool
		MustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			ok, err = tx.SettleNotice(ctx, id, mid, login, T0, time.Time{})
			return err
		})
		return ok
	}
	pending := func(login string) []chat.MID {
		ps, _ := stores.Deliveries.PendingFor(ctx, login, 0, 100)
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
		{f.ID, eg, "c", false},        // not due to c
		{f.ID + 1, eg, "b", false},    // another group
		{f.ID, f.MIDs[1], "b", false}, // a message, not a notification
		{f.ID, eg, "b", true},         // settled
		{f.ID, eg, "b", true},         // and again
		{f.ID, f.MIDs[0], "c", true},  // the deleted message's MID: its DM
		{f.ID, dm, "b", true},         // the DM's own MID
		{f.ID, f.MIDs[1] + 1000, "b", false},
	} {
		if got := settle(c.id, c.mid, c.login); got != c.want {
			t.Errorf("SettleNotice(%d, %d, %s) = %v, want %v", c.id, c.mid, c.login, got, c.want)
		}
	}
	if got := fmt.Sprint(pending("b")); got != fmt.Sprint([]chat.MID{f.MIDs[1]}) {
		t.Errorf("b's pending: %s, want only message 1", got)
	}
	if got := fmt.Sprint(pending("c")); got != fmt.Sprint([]chat.MID{f.MIDs[1]}) {
		t.Errorf("c's pending: %s, want only message 1", got)
	}
}
