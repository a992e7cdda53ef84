package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"gchd/chat"
	"gchd/registrar"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// The conformance suite: every test here runs unchanged on every engine.

func eachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	for _, e := range storagetest.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			fn(t, storagetest.Open(t, e))
		})
	}
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)

func mustUpdate(t *testing.T, s chat.Store, fn func(chat.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

func TestGroupRoundTrip(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		want := chat.Group{Subject: "Żółć ąę 🎉", Owner: "alice", Created: t0, AvatarAt: t0.Add(time.Second)}
		mustUpdate(t, s, func(tx chat.Tx) error {
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
		want.Subject, want.Owner, want.AvatarAt, want.VideoAt = "new", "bob", time.Time{}, t0
		mustUpdate(t, s, func(tx chat.Tx) error {
			if _, err := tx.LockGroup(ctx, want.ID); err != nil {
				return err
			}
			return tx.UpdateGroup(ctx, want)
		})
		if got, _ := s.Group(ctx, want.ID); got != want {
			t.Fatalf("after update = %+v, want %+v", got, want)
		}
	})
}

func TestMembersAndGuests(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		accounts := registrar.NewAccounts(db.AccountStore(), "example.org")
		if err := accounts.Add(ctx, "alice", "pw", "Alice"); err != nil {
			t.Fatal(err)
		}
		var id chat.GroupID
		mustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "alice", Created: t0}); err != nil {
				return err
			}
			for i, m := range []chat.Member{
				{Login: "alice", DisplayName: "A", Status: chat.StatusJoined, Admin: true},
				{Login: "+48500100200", DisplayName: "guest", Status: chat.StatusWaiting},
			} {
				m.Group, m.Since = id, t0.Add(time.Duration(i)*time.Millisecond)
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
		if len(ms) != 2 || ms[0].Login != "alice" || !ms[0].HasAccount || !ms[0].Admin || ms[0].Since != t0 {
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
		mustUpdate(t, s, func(tx chat.Tx) error {
			return tx.PutMember(ctx, chat.Member{Group: id, Login: "+48500100200", DisplayName: "x", Status: chat.StatusLeft, Since: t0.Add(time.Hour)})
		})
		if ms, _ = s.Members(ctx, id); ms[1].Status != chat.StatusLeft || ms[1].DisplayName != "x" {
			t.Fatalf("after upsert: %+v", ms[1])
		}
	})
}

func TestEventsReceiptsAndCascade(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		var id chat.GroupID
		var mids []chat.MID
		mustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: t0}); err != nil {
				return err
			}
			for _, l := range []string{"a", "b"} {
				if err := tx.PutMember(ctx, chat.Member{Group: id, Login: l, DisplayName: l, Status: chat.StatusJoined, Since: t0}); err != nil {
					return err
				}
			}
			for i := 0; i < 3; i++ {
				mid, err := tx.AppendEvent(ctx, chat.Event{Group: id, Kind: chat.KindMessage, Sender: "a", SenderDN: "A", Body: "hi\r\n\t\"?", Time: t0}, []string{"a", "b", "c"})
				if err != nil {
					return err
				}
				mids = append(mids, mid)
			}
			return tx.PutMedia(ctx, chat.Media{Group: id, Kind: chat.MediaAvatar, ContentType: "image/jpeg", Data: []byte{0xff, 0xd8, 0}, Updated: t0})
		})
		// An event due to nobody still gets its MID.
		mustUpdate(t, s, func(tx chat.Tx) error {
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: id + 1000, Kind: chat.KindEditGroup, Sender: "a", Time: t0}, nil)
			if err == nil && mid <= mids[2] {
				err = fmt.Errorf("MID %d after %d", mid, mids[2])
			}
			return err
		})
		if !(mids[0] < mids[1] && mids[1] < mids[2]) {
			t.Fatalf("MIDs not increasing: %v", mids)
		}
		ev, err := s.Event(ctx, mids[0])
		if err != nil || ev.Body != "hi\r\n\t\"?" || ev.Sender != "a" || ev.Time != t0 || ev.Group != id {
			t.Fatalf("event = %+v, %v", ev, err)
		}
		if _, err := s.Event(ctx, mids[2]+100); !errors.Is(err, chat.ErrNoMessage) {
			t.Fatalf("missing event: %v", err)
		}
		evs, err := s.Events(ctx, id, mids[0], 10)
		if err != nil || len(evs) != 2 || evs[0].MID != mids[1] {
			t.Fatalf("events after %d = %+v, %v", mids[0], evs, err)
		}
		cf := t0.Add(time.Minute)
		mustUpdate(t, s, func(tx chat.Tx) error {
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
		if ps, _ := db.DeliveryStore().PendingFor(ctx, "b", mids[0], 10); len(ps) != 1 || ps[0].Event.MID != mids[2] {
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
		mustUpdate(t, s, func(tx chat.Tx) error { return tx.DeleteGroup(ctx, id) })
		if ms, _ := s.Members(ctx, id); len(ms) != 0 {
			t.Fatalf("members after delete: %+v", ms)
		}
		if _, err := s.Media(ctx, id, chat.MediaAvatar); !errors.Is(err, chat.ErrNoMedia) {
			t.Fatalf("media after delete: %v", err)
		}
		if _, err := s.Event(ctx, mids[0]); !errors.Is(err, chat.ErrNoMessage) {
			t.Fatalf("event after group delete: %v", err)
		}
	})
}

func TestGroupsWith(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		mk := func(members map[string]chat.Status) (id chat.GroupID) {
			mustUpdate(t, s, func(tx chat.Tx) error {
				var err error
				if id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: t0}); err != nil {
					return err
				}
				for l, st := range members {
					if err := tx.PutMember(ctx, chat.Member{Group: id, Login: l, DisplayName: l, Status: st, Since: t0}); err != nil {
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
	})
}

func TestUpdateRollsBack(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		var id chat.GroupID
		boom := errors.New("boom")
		err := s.Update(ctx, func(tx chat.Tx) error {
			var err error
			id, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: t0})
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
				tx.CreateGroup(ctx, chat.Group{Subject: "p", Owner: "a", Created: t0})
				panic("in transaction")
			})
		}()
		if groups, _ := s.GroupsWith(ctx, "a"); len(groups) != 0 {
			t.Fatalf("groups after rollback: %+v", groups)
		}
		mustUpdate(t, s, func(tx chat.Tx) error {
			_, err := tx.CreateGroup(ctx, chat.Group{Subject: "ok", Owner: "a", Created: t0})
			return err
		})
	})
}

// Concurrent updates may share one transaction (SQLite's group commit):
// one that fails or panics is undone alone, the others are committed.
func TestConcurrentUpdatesFailAlone(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
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
					id, err := tx.CreateGroup(ctx, chat.Group{Subject: fmt.Sprint(i), Owner: "a", Created: t0})
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
	})
}

func TestAccounts(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.AccountStore()
		a := registrar.Account{Login: "alice", DisplayName: "Alice", Realm: "r", HA1MD5: "m", HA1SHA256: "s", Created: t0, Updated: t0}
		if err := s.CreateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccount(ctx, a); !errors.Is(err, registrar.ErrAccountExists) {
			t.Fatalf("duplicate: %v", err)
		}
		got, err := s.Account(ctx, "alice")
		if err != nil || got != a {
			t.Fatalf("account = %+v, %v", got, err)
		}
		a.HA1MD5, a.Updated = "m2", t0.Add(time.Hour)
		if err := s.UpdateAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Account(ctx, "alice"); got != a {
			t.Fatalf("after update = %+v", got)
		}
		if err := s.UpdateAccount(ctx, registrar.Account{Login: "nobody"}); !errors.Is(err, registrar.ErrNoAccount) {
			t.Fatalf("update missing: %v", err)
		}
		added, updated, err := s.PutAccounts(ctx, []registrar.Account{a, {Login: "bob", Realm: "r", Created: t0, Updated: t0}})
		if err != nil || added != 1 || updated != 1 {
			t.Fatalf("put = %d, %d, %v", added, updated, err)
		}
		list, err := s.Accounts(ctx)
		if err != nil || len(list) != 2 || list[0].Login != "alice" || list[1].Login != "bob" {
			t.Fatalf("list = %+v, %v", list, err)
		}
		if err := s.DeleteAccount(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteAccount(ctx, "bob"); !errors.Is(err, registrar.ErrNoAccount) {
			t.Fatalf("delete missing: %v", err)
		}
		if _, err := s.Account(ctx, "bob"); !errors.Is(err, registrar.ErrNoAccount) {
			t.Fatalf("deleted account: %v", err)
		}
	})
}

// Concurrent lookups share queries (accountreads.go): each caller still
// gets its own account, or ErrNoAccount, whatever batch it was read in,
// the same login asked for twice in a batch included.
func TestAccountReadsConcurrent(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.AccountStore()
		var accounts []registrar.Account
		for i := range 50 {
			a := registrar.Account{Login: fmt.Sprintf("user%02d", i), Realm: "r", HA1MD5: fmt.Sprint("m", i), HA1SHA256: fmt.Sprint("s", i),
				Created: t0, Updated: t0}
			accounts = append(accounts, a)
		}
		if _, _, err := s.PutAccounts(ctx, accounts); err != nil {
			t.Fatal(err)
		}
		const callers = 400
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := i % 70 // 50 to 69 have no account
				login := fmt.Sprintf("user%02d", n)
				got, err := s.Account(ctx, login)
				switch {
				case n >= 50 && !errors.Is(err, registrar.ErrNoAccount):
					errs <- fmt.Errorf("%s: %+v, %v; want ErrNoAccount", login, got, err)
				case n < 50 && (err != nil || got != accounts[n]):
					errs <- fmt.Errorf("%s: %+v, %v; want %+v", login, got, err, accounts[n])
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	})
}

// A batch of bindings of any size is written whole (SQLite writes it in
// chunks of 16, 4 and 1 rows), changed bindings are updated in place, and
// deletes apply in the same transaction.
func TestSaveBindingsBatches(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.BindingStore()
		binding := func(i int, cseq uint32) registrar.Binding {
			u := fmt.Sprintf("user%02d", i)
			return registrar.Binding{AOR: u, URI: "sip:" + u + "@192.0.2.10", Expires: t0.Add(time.Hour), CallID: "c-" + u, CSeq: cseq,
				Transport: "UDP", Source: "192.0.2.10:5060", Node: "gchd", UserAgent: "test", Updated: t0}
		}
		var put []registrar.Binding
		for i := range 23 { // 16 + 4 + 1 + 1 + 1
			put = append(put, binding(i, 1))
		}
		if err := s.SaveBindings(ctx, put, nil); err != nil {
			t.Fatal(err)
		}
		// Change 5, delete 2, add 1.
		var again []registrar.Binding
		for i := 10; i < 15; i++ {
			again = append(again, binding(i, 2))
		}
		full := binding(30, 1) // every field set, to come back as written
		full.Instance, full.RegID, full.Q, full.NAT = "<urn:uuid:00000000-0000-0000-0000-000000000001>", 2, "0.5", true
		full.Push = registrar.Push{Provider: "apns", PRID: "00fc13adff78512:remote&00fc13adff78513:voip", Param: "ABCD1234.org.example.phone.remote&voip"}
		again = append(again, full)
		// A device known by its push address alone: its key is that
		// address, and a new registration of it replaces the row.
		byPush := binding(31, 1)
		byPush.Push = registrar.Push{Provider: "fcm", PRID: "token-31"}
		again = append(again, byPush)
		del := []registrar.BindingRef{{AOR: "user00", Key: put[0].Key()}, {AOR: "user22", Key: put[22].Key()}}
		if err := s.SaveBindings(ctx, again, del); err != nil {
			t.Fatal(err)
		}
		got, err := s.LoadBindings(ctx, t0)
		if err != nil {
			t.Fatal(err)
		}
		byAOR := map[string]registrar.Binding{}
		for _, bd := range got {
			byAOR[bd.AOR] = bd
		}
		if len(got) != 23 || len(byAOR) != 23 {
			t.Fatalf("%d bindings stored (%d AORs), want 23", len(got), len(byAOR))
		}
		for i, want := range map[int]uint32{1: 1, 9: 1, 10: 2, 14: 2, 15: 1, 21: 1, 30: 1} {
			if bd, ok := byAOR[fmt.Sprintf("user%02d", i)]; !ok || bd.CSeq != want || bd.URI != binding(i, 0).URI {
				t.Errorf("user%02d: %+v, want CSeq %d", i, bd, want)
			}
		}
		for _, gone := range []string{"user00", "user22"} {
			if _, ok := byAOR[gone]; ok {
				t.Errorf("%s still stored after its delete", gone)
			}
		}
		got30 := byAOR["user30"]
		if !got30.Expires.Equal(full.Expires) || !got30.Updated.Equal(full.Updated) {
			t.Errorf("user30 times %v, %v, want %v, %v", got30.Expires, got30.Updated, full.Expires, full.Updated)
		}
		got30.Expires, got30.Updated = full.Expires, full.Updated
		if got30 != full {
			t.Errorf("user30 stored as %+v, want %+v", got30, full)
		}
		moved := byPush
		moved.URI, moved.Source, moved.CSeq = "sip:user31@192.0.2.11:40000", "192.0.2.11:40000", 2
		if err := s.SaveBindings(ctx, []registrar.Binding{moved}, nil); err != nil {
			t.Fatal(err)
		}
		listed, err := db.ListBindings(ctx, "user31", t0)
		if err != nil || len(listed) != 1 {
			t.Fatalf("user31 after registering from elsewhere: %+v, %v; want one binding", listed, err)
		}
		listed[0].Expires, listed[0].Updated = moved.Expires, moved.Updated
		if listed[0] != moved {
			t.Errorf("user31 stored as %+v, want %+v", listed[0], moved)
		}
	})
}

// Queued binding changes are committed in batches in the order they were
// queued: a removal queued after a put of the same binding stays removed,
// a later put wins, and changes queued from many goroutines at once are
// all written.
func TestQueuedBindingsKeepOrder(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.BindingStore()
		binding := func(aor string, cseq uint32) registrar.Binding {
			return registrar.Binding{AOR: aor, URI: "sip:" + aor + "@192.0.2.10", Expires: t0.Add(time.Hour), CallID: "c-" + aor, CSeq: cseq,
				Transport: "UDP", Source: "192.0.2.10:5060", Node: "gchd", Updated: t0}
		}
		ref := func(aor string) registrar.BindingRef {
			return registrar.BindingRef{AOR: aor, Key: binding(aor, 0).Key()}
		}
		commits := []registrar.BindingCommit{
			s.QueueBindings([]registrar.Binding{binding("gone", 1)}, nil),
			s.QueueBindings([]registrar.Binding{binding("back", 1)}, nil),
			s.QueueBindings(nil, []registrar.BindingRef{ref("gone"), ref("back")}),
			s.QueueBindings([]registrar.Binding{binding("back", 2), binding("twice", 1)}, nil),
			s.QueueBindings([]registrar.Binding{binding("twice", 2)}, nil),
		}
		for _, c := range commits {
			if err := c.Wait(); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, 40)
		for i := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- s.SaveBindings(ctx, []registrar.Binding{binding(fmt.Sprintf("many%02d", i), 1)}, nil)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.LoadBindings(ctx, t0)
		if err != nil {
			t.Fatal(err)
		}
		cseq := map[string]uint32{}
		for _, bd := range got {
			cseq[bd.AOR] = bd.CSeq
		}
		if _, ok := cseq["gone"]; ok {
			t.Error("a binding removed after its put is stored")
		}
		if cseq["back"] != 2 || cseq["twice"] != 2 {
			t.Errorf("back at CSeq %d, twice at %d; want the last put of each, 2", cseq["back"], cseq["twice"])
		}
		if len(got) != 42 {
			t.Errorf("%d bindings stored, want 42", len(got))
		}
	})
}

func TestMigrations(t *testing.T) {
	for _, e := range storagetest.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := storagetest.DSN(t, e)
			db, err := storage.Open(ctx, dsn, storage.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			cur, known, err := db.SchemaVersion(ctx)
			if err != nil || cur != known || known < 1 {
				t.Fatalf("version = %d of %d, %v", cur, known, err)
			}
			// Migrating again is a no-op.
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			// A schema newer than the binary is refused with a clear message.
			if err := db.MarkSchemaVersionForTest(ctx, known+1); err != nil {
				t.Fatal(err)
			}
			db2, err := storage.Open(ctx, dsn, storage.Options{})
			if err == nil {
				db2.Close()
				t.Fatal("opened a database newer than the binary")
			}
			if want := "newer than this gchd knows"; !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v, want it to say %q", err, want)
			}
		})
	}
}

func TestParseDSN(t *testing.T) {
	tests := []struct {
		dsn    string
		engine storage.Engine
		ok     bool
	}{
		{"sqlite:./data/gchd.db", storage.SQLite, true},
		{"sqlite:///var/lib/gchd/gchd.db", storage.SQLite, true},
		{"postgres://u:secret@h/db?sslmode=disable", storage.Postgres, true},
		{"postgresql://h/db", storage.Postgres, true},
		{"sqlite:", "", false},
		{"mysql://h/db", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		e, _, err := storage.ParseDSN(tt.dsn)
		if (err == nil) != tt.ok || e != tt.engine {
			t.Errorf("ParseDSN(%q) = %q, %v", tt.dsn, e, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error leaks the password: %v", err)
		}
	}
}

// EventsFor reads a login's stream: events due to it and messages it sent,
// of every group it has a row in and the DG of deleted ones, within
// (after, upTo], in MID order; LastMID is the end of the log.
func TestEventsFor(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		if last, err := s.LastMID(ctx); err != nil || last != 0 {
			t.Fatalf("LastMID of an empty log: %d, %v", last, err)
		}
		var g1, g2, g3 chat.GroupID
		var mids []chat.MID
		appendEv := func(tx chat.Tx, g chat.GroupID, kind chat.Kind, sender string, to ...string) error {
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: g, Kind: kind, Sender: sender, Body: "x", Time: t0}, to)
			mids = append(mids, mid)
			return err
		}
		mustUpdate(t, s, func(tx chat.Tx) error {
			var err error
			if g1, err = tx.CreateGroup(ctx, chat.Group{Subject: "one", Owner: "a", Created: t0}); err != nil {
				return err
			}
			if g2, err = tx.CreateGroup(ctx, chat.Group{Subject: "two", Owner: "c", Created: t0}); err != nil {
				return err
			}
			if g3, err = tx.CreateGroup(ctx, chat.Group{Subject: "three", Owner: "c", Created: t0}); err != nil {
				return err
			}
			for _, m := range []chat.Member{{Group: g1, Login: "a", Status: chat.StatusJoined, Since: t0},
				{Group: g1, Login: "b", Status: chat.StatusJoined, Since: t0}, {Group: g2, Login: "c", Status: chat.StatusJoined, Since: t0},
				{Group: g2, Login: "a", Status: chat.StatusWaiting, Since: t0},
				{Group: g3, Login: "c", Status: chat.StatusJoined, Since: t0}, {Group: g3, Login: "a", Status: chat.StatusJoined, Since: t0}} {
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
	})
}
