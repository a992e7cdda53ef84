package storagetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"gchd/chat"
	"gchd/registrar"
)

func testGroupRoundTrip(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	want := chat.Group{Subject: "Żółć ąę 🎉", Owner: "alice", Created: T0, AvatarAt: T0.Add(time.Second)}
	MustUpdate(t, s, func(tx chat.Tx) error {
		id, err := tx.CreateGroup(ctx, want)
		want.ID = id
		return err
	})
	if want.ID == 0 {
		t.Fatal("group id 0")
	}
	got, err := s.Group(ctx, want.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("group = %+v, want %+v", got, want)
	}
	if _, err := s.Group(ctx, want.ID+1000); !errors.Is(err, chat.ErrNoGroup) {
		t.Fatalf("missing group: err = %v, want ErrNoGroup", err)
	}
	want.Subject, want.Owner, want.AvatarAt, want.VideoAt = "new", "bob", time.Time{}, T0
	MustUpdate(t, s, func(tx chat.Tx) error {
		if _, err := tx.LockGroup(ctx, want.ID); err != nil {
			return err
		}
		return tx.UpdateGroup(ctx, want)
	})
	if got, _ := s.Group(ctx, want.ID); got != want {
		t.Fatalf("after update = %+v, want %+v", got, want)
	}
}

func testMembersAndGuests(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	accounts := registrar.NewAccounts(stores.Accounts, "example.org")
	if err := accounts.Add(ctx, "alice", "pw", "Alice"); err != nil {
		t.Fatal(err)
	}
	var id chat.GroupID
	MustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "alice", Created: T0}); err != nil {
			return err
		}
		for i, m := range []chat.Member{
			{Login: "alice", DisplayName: "A", Status: chat.StatusJoined, Admin: true},
			{Login: "+48500100200", DisplayName: "guest", Status: chat.StatusWaiting},
		} {
			m.Group, m.Since = id, T0.Add(time.Duration(i)*time.Millisecond)
			if err := tx.PutMember(ctx, m); err != nil {
				return err
			}
		}
		return nil
	})
	ms, err := s.Members(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Login != "alice" || !ms[0].HasAccount || !ms[0].Admin || ms[0].Since != T0 {
		t.Fatalf("members[0] = %+v", ms[0])
	}
	if ms[1].Login != "+48500100200" || ms[1].HasAccount || ms[1].Status != chat.StatusWaiting {
		t.Fatalf("members[1] = %+v", ms[1])
	}
	// The guest gets an account: from then on it is a member like others.
	if err := accounts.Add(ctx, "+48500100200", "pw", ""); err != nil {
		t.Fatal(err)
	}
	if ms, _ = s.Members(ctx, id); !ms[1].HasAccount {
		t.Fatalf("after account: %+v", ms[1])
	}
	// Upsert replaces.
	MustUpdate(t, s, func(tx chat.Tx) error {
		return tx.PutMember(ctx, chat.Member{Group: id, Login: "+48500100200", DisplayName: "x", Status: chat.StatusLeft, Since: T0.Add(time.Hour)})
	})
	if ms, _ = s.Members(ctx, id); ms[1].Status != chat.StatusLeft || ms[1].DisplayName != "x" {
		t.Fatalf("after upsert: %+v", ms[1])
	}
}

func testEventsReceiptsAndCascade(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	var id chat.GroupID
	var mids []chat.MID
	MustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: T0}); err != nil {
			return err
		}
		for _, l := range []string{"a", "b"} {
			if err := tx.PutMember(ctx, chat.Member{Group: id, Login: l, DisplayName: l, Status: chat.StatusJoined, Since: T0}); err != nil {
				return err
			}
		}
		for i := 0; i < 3; i++ {
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: id, Kind: chat.KindMessage, Sender: "a", SenderDN: "A", Body: "hi\r\n\t\"?", Time: T0}, []string{"a", "b", "c"})
			if err != nil {
				return err
			}
			mids = append(mids, mid)
		}
		return tx.PutMedia(ctx, chat.Media{Group: id, Kind: chat.MediaAvatar, ContentType: "image/jpeg", Data: []byte{0xff, 0xd8, 0}, Updated: T0})
	})
	// An event due to nobody still gets its MID.
	MustUpdate(t, s, func(tx chat.Tx) error {
		mid, err := tx.AppendEvent(ctx, chat.Event{Group: id + 1000, Kind: chat.KindEditGroup, Sender: "a", Time: T0}, nil)
		if err == nil && mid <= mids[2] {
			err = fmt.Errorf("MID %d after %d", mid, mids[2])
		}
		return err
	})
	if !(mids[0] < mids[1] && mids[1] < mids[2]) {
		t.Fatalf("MIDs not increasing: %v", mids)
	}
	ev, err := s.Event(ctx, mids[0])
	if err != nil || ev.Body != "hi\r\n\t\"?" || ev.Sender != "a" || ev.Time != T0 || ev.Group != id {
		t.Fatalf("event = %+v, %v", ev, err)
	}
	if _, err := s.Event(ctx, mids[2]+100); !errors.Is(err, chat.ErrNoMessage) {
		t.Fatalf("missing event: %v", err)
	}
	evs, err := s.Events(ctx, id, mids[0], 10)
	if err != nil || len(evs) != 2 || evs[0].MID != mids[1] {
		t.Fatalf("events after %d = %+v, %v", mids[0], evs, err)
	}
	cf := T0.Add(time.Minute)
	MustUpdate(t, s, func(tx chat.Tx) error {
		if err := tx.SetReceipt(ctx, mids[0], "b", cf, time.Time{}); err != nil {
			return err
		}
		// A later cf keeps the first; rd is set; a login the message
		// was not due to gets no receipt.
		if err := tx.SetReceipt(ctx, mids[0], "b", cf.Add(time.Hour), cf.Add(time.Hour)); err != nil {
			return err
		}
		if err := tx.SetReceipt(ctx, mids[0], "d", cf, time.Time{}); err != nil {
			return err
		}
		return tx.DeleteMessage(ctx, mids[1])
	})
	if ps, _ := stores.Deliveries.PendingFor(ctx, "b", mids[0], 10); len(ps) != 1 || ps[0].Event.MID != mids[2] {
		t.Fatalf("pending for b after deleting %d: %+v", mids[1], ps)
	}
	rs, err := s.Receipts(ctx, mids[0])
	if err != nil {
		t.Fatal(err)
	}
	want := []chat.Receipt{{Login: "b", Confirmed: cf, Read: cf.Add(time.Hour)}, {Login: "c"}}
	if len(rs) != len(want) {
		t.Fatalf("receipts = %+v, want %+v (sender excluded)", rs, want)
	}
	for i := range want {
		if rs[i] != want[i] {
			t.Fatalf("receipt %d = %+v, want %+v", i, rs[i], want[i])
		}
	}
	if ev, _ := s.Event(ctx, mids[1]); !ev.Deleted || ev.Body != "" {
		t.Fatalf("deleted event = %+v", ev)
	}
	m, err := s.Media(ctx, id, chat.MediaAvatar)
	if err != nil || string(m.Data) != "\xff\xd8\x00" || m.ContentType != "image/jpeg" {
		t.Fatalf("media = %+v, %v", m, err)
	}
	if _, err := s.Media(ctx, id, chat.MediaVideo); !errors.Is(err, chat.ErrNoMedia) {
		t.Fatalf("missing media: %v", err)
	}
	// Deleting the group takes members, media and the log.
	MustUpdate(t, s, func(tx chat.Tx) error { return tx.DeleteGroup(ctx, id) })
	if ms, _ := s.Members(ctx, id); len(ms) != 0 {
		t.Fatalf("members after delete: %+v", ms)
	}
	if _, err := s.Media(ctx, id, chat.MediaAvatar); !errors.Is(err, chat.ErrNoMedia) {
		t.Fatalf("media after delete: %v", err)
	}
	if _, err := s.Event(ctx, mids[0]); !errors.Is(err, chat.ErrNoMessage) {
		t.Fatalf("event after group delete: %v", err)
	}
}

func testGroupsWith(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	mk := func(members map[string]chat.Status) (id chat.GroupID) {
		MustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: T0}); err != nil {
				return err
			}
			for l, st := range members {
				if err := tx.PutMember(ctx, chat.Member{Group: id, Login: l, DisplayName: l, Status: st, Since: T0}); err != nil {
					return err
				}
			}
			return nil
		})
		return id
	}
	g1 := mk(map[string]chat.Status{"a": chat.StatusJoined, "b": chat.StatusWaiting})
	mk(map[string]chat.Status{"a": chat.StatusJoined, "b": chat.StatusLeft})
	g3 := mk(map[string]chat.Status{"a": chat.StatusJoined})
	common, err := s.GroupsWith(ctx, "a", "b")
	if err != nil || len(common) != 1 || common[0].ID != g1 {
		t.Fatalf("common(a,b) = %+v, %v; want [%d]", common, err, g1)
	}
	mine, err := s.GroupsWith(ctx, "a")
	if err != nil || len(mine) != 3 || mine[2].ID != g3 {
		t.Fatalf("groups(a) = %+v, %v", mine, err)
	}
	if none, err := s.GroupsWith(ctx, "zed"); err != nil || len(none) != 0 {
		t.Fatalf("groups(zed) = %+v, %v", none, err)
	}
}

func testUpdateRollsBack(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	var id chat.GroupID
	boom := errors.New("boom")
	err := s.Update(ctx, func(tx chat.Tx) error {
		var err error
		id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: T0})
		if err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if _, err := s.Group(ctx, id); !errors.Is(err, chat.ErrNoGroup) {
		t.Fatalf("rolled-back group is visible: %v", err)
	}
	// A panic rolls back too, and the store stays usable.
	func() {
		defer func() { recover() }()
		s.Update(ctx, func(tx chat.Tx) error {
			tx.CreateGroup(ctx, chat.Group{Subject: "p", Owner: "a", Created: T0})
			panic("in transaction")
		})
	}()
	if groups, _ := s.GroupsWith(ctx, "a"); len(groups) != 0 {
		t.Fatalf("groups after rollback: %+v", groups)
	}
	MustUpdate(t, s, func(tx chat.Tx) error {
		_, err := tx.CreateGroup(ctx, chat.Group{Subject: "ok", Owner: "a", Created: T0})
		return err
	})
}

// Concurrent updates may share one transaction (SQLite's group commit):
// one that fails or panics is undone alone, the others are committed.
func testConcurrentUpdatesFailAlone(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	const n = 60
	ids := make([]chat.GroupID, n)
	errs := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			errs[i] = s.Update(ctx, func(tx chat.Tx) error {
				if i%13 == 7 {
					cancel() // its caller gives up while it runs
				}
				id, err := tx.CreateGroup(ctx, chat.Group{Subject: fmt.Sprint(i), Owner: "a", Created: T0})
				ids[i] = id
				switch {
				case err != nil:
					return err
				case i%7 == 3:
					return fmt.Errorf("refused %d", i)
				case i%11 == 5:
					panic(fmt.Sprint("panic ", i))
				}
				return nil
			})
		}()
	}
	wg.Wait()
	for i := range n {
		g, err := s.Group(ctx, ids[i])
		if err == nil && g.Subject != fmt.Sprint(i) {
			err = chat.ErrNoGroup // the id of an undone group was used again
		}
		switch {
		case i%13 == 7:
			// Committed, or failed alone: never both, and never the
			// others' undoing.
			if (errs[i] == nil) != (err == nil) {
				t.Errorf("cancelled update %d: %v; its group: %v", i, errs[i], err)
			}
		case i%7 == 3:
			if errs[i] == nil || !errors.Is(err, chat.ErrNoGroup) {
				t.Errorf("update %d failed with %v, its group: %v", i, errs[i], err)
			}
		case i%11 == 5:
			if panics[i] != fmt.Sprint("panic ", i) || !errors.Is(err, chat.ErrNoGroup) {
				t.Errorf("update %d panicked with %v, its group: %v", i, panics[i], err)
			}
		default:
			if errs[i] != nil || panics[i] != nil || err != nil {
				t.Errorf("update %d: %v, %v; its group: %v", i, errs[i], panics[i], err)
			}
		}
	}
}

// EventsFor reads a login's stream: events due to it and messages it sent,
// of every group it has a row in and the DG of deleted ones, within
// (after, upTo], in MID order; LastMID is the end of the log.
func testEventsFor(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	if last, err := s.LastMID(ctx); err != nil || last != 0 {
		t.Fatalf("LastMID of an empty log: %d, %v", last, err)
	}
	var g1, g2, g3 chat.GroupID
	var mids []chat.MID
	appendEv := func(tx chat.Tx, g chat.GroupID, kind chat.Kind, sender string, to ...string) error {
		mid, err := tx.AppendEvent(ctx, chat.Event{Group: g, Kind: kind, Sender: sender, Body: "x", Time: T0}, to)
		mids = append(mids, mid)
		return err
	}
	MustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if g1, err = tx.CreateGroup(ctx, chat.Group{Subject: "one", Owner: "a", Created: T0}); err != nil {
			return err
		}
		if g2, err = tx.CreateGroup(ctx, chat.Group{Subject: "two", Owner: "c", Created: T0}); err != nil {
			return err
		}
		if g3, err = tx.CreateGroup(ctx, chat.Group{Subject: "three", Owner: "c", Created: T0}); err != nil {
			return err
		}
		for _, m := range []chat.Member{{Group: g1, Login: "a", Status: chat.StatusJoined, Since: T0},
			{Group: g1, Login: "b", Status: chat.StatusJoined, Since: T0}, {Group: g2, Login: "c", Status: chat.StatusJoined, Since: T0},
			{Group: g2, Login: "a", Status: chat.StatusWaiting, Since: T0},
			{Group: g3, Login: "c", Status: chat.StatusJoined, Since: T0}, {Group: g3, Login: "a", Status: chat.StatusJoined, Since: T0}} {
			if err := tx.PutMember(ctx, m); err != nil {
				return err
			}
		}
		return errors.Join(
			appendEv(tx, g1, chat.KindNewGroup, "a", "a", "b"), // 0: a, b
			appendEv(tx, g1, chat.KindMessage, "a", "b"),       // 1: a's own, b
			appendEv(tx, g1, chat.KindMessage, "b", "a"),       // 2: a, b's own
			appendEv(tx, g2, chat.KindNewGroup, "c", "c", "a"), // 3: c, a
			appendEv(tx, g2, chat.KindMessage, "c"),            // 4: c's own only
			appendEv(tx, 0, chat.KindDirect, "c", "a"),         // 5: on no stream
			appendEv(tx, g3, chat.KindMessage, "a", "c"),       // gone with g3
			appendEv(tx, g3, chat.KindDeleteGroup, "c", "c", "a"),
			tx.DeleteGroup(ctx, g3), // 7: its DG stays
		)
	})
	last, err := s.LastMID(ctx)
	if err != nil || last != mids[7] {
		t.Fatalf("LastMID = %d, %v; want %d", last, err, mids[7])
	}
	read := func(login string, after, upTo chat.MID, limit int) []chat.MID {
		t.Helper()
		evs, err := s.EventsFor(ctx, login, after, upTo, limit)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]chat.MID, len(evs))
		for i, ev := range evs {
			out[i] = ev.MID
		}
		return out
	}
	for _, tt := range []struct {
		login       string
		after, upTo chat.MID
		limit       int
		want        []int
	}{
		{"a", 0, last, 10, []int{0, 1, 2, 3, 7}}, // invited to g2: its NG
		{"b", 0, last, 10, []int{0, 1, 2}},
		{"c", 0, last, 10, []int{3, 4, 7}}, // g3 is gone but its DG
		{"a", mids[0], mids[3], 10, []int{1, 2, 3}},
		{"a", 0, last, 2, []int{0, 1}},
		{"a", mids[7], last, 10, nil},
		{"a", 0, 1<<64 - 1, 10, []int{0, 1, 2, 3, 7}},
		{"nobody", 0, last, 10, nil},
	} {
		var want []chat.MID
		for _, i := range tt.want {
			want = append(want, mids[i])
		}
		if got := read(tt.login, tt.after, tt.upTo, tt.limit); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("EventsFor(%s, %d, %d, %d) = %v, want %v", tt.login, tt.after, tt.upTo, tt.limit, got, want)
		}
	}
}
