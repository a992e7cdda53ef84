package chat_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gchd/chat"
	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

// gateKey marks an update whose commit the test holds back.
type gateKey struct{}

// gate holds one update: reached is closed once its transaction has done
// its work (drawn its MIDs), and the update goes on when release receives
// nil, or fails with the error it receives.
type gate struct {
	reached chan struct{}
	release chan error
}

func newGate() *gate { return &gate{reached: make(chan struct{}), release: make(chan error, 1)} }

// gatedStore holds the updates whose context carries a gate. On PostgreSQL
// it holds them inside the transaction, before the commit, so that other
// transactions really commit first; SQLite has one writer, which a held
// transaction would stop, so there the update is held after its commit,
// before the service hears of it. Either way the service sees a lower MID
// settle after a higher one.
type gatedStore struct {
	chat.Store
	inTx bool
}

// UpdateIn holds a gated update as Update does, outside the store's
// batches of one group: a held batch would hold back the very commits the
// tests wait for. The others are batched.
func (s gatedStore) UpdateIn(ctx context.Context, id chat.GroupID, fn func(chat.Tx) error) error {
	if g, _ := ctx.Value(gateKey{}).(*gate); g != nil {
		return s.Update(ctx, fn)
	}
	return s.Store.UpdateIn(ctx, id, fn)
}

func (s gatedStore) Update(ctx context.Context, fn func(chat.Tx) error) error {
	g, _ := ctx.Value(gateKey{}).(*gate)
	if g == nil {
		return s.Store.Update(ctx, fn)
	}
	if s.inTx {
		return s.Store.Update(ctx, func(tx chat.Tx) error {
			if err := fn(tx); err != nil {
				return err
			}
			close(g.reached)
			return <-g.release
		})
	}
	if err := s.Store.Update(ctx, fn); err != nil {
		return err
	}
	close(g.reached)
	return <-g.release
}

type eventsEnv struct {
	db  *storage.DB
	svc *chat.Service
}

// eachEventsEngine runs fn with a service over a gated store of every
// engine, its streams open, and accounts a..f.
func eachEventsEngine(t *testing.T, fn func(t *testing.T, e eventsEnv, engine storage.Engine)) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		db := testkit.Open(t, engine)
		accounts := registrar.NewAccounts(db.AccountStore(), "test")
		for _, l := range []string{"a", "b", "c", "d", "e", "f"} {
			if err := accounts.Add(context.Background(), l, "pw", strings.ToUpper(l)); err != nil {
				t.Fatal(err)
			}
		}
		svc := chat.NewService(gatedStore{Store: db.ChatStore(), inTx: engine == storage.Postgres})
		if err := svc.OpenEvents(context.Background()); err != nil {
			t.Fatal(err)
		}
		fn(t, eventsEnv{db: db, svc: svc}, engine)
	})
}

func (e eventsEnv) group(t *testing.T, owner string, members ...string) chat.GroupID {
	t.Helper()
	ctx := context.Background()
	id, err := e.svc.AddGroup(ctx, caller(owner), "subject", "", invitees(members...))
	if err != nil {
		t.Fatalf("AddGroup: %v", err)
	}
	for _, m := range members {
		if err := e.svc.Join(ctx, caller(m), id, ""); err != nil {
			t.Fatalf("Join %s: %v", m, err)
		}
	}
	return id
}

func (e eventsEnv) post(t testing.TB, ctx context.Context, login string, id chat.GroupID, text string) chat.MID {
	t.Helper()
	mid, err := e.svc.SendMessage(ctx, caller(login), chat.Post{Group: id, Text: text})
	if err != nil {
		t.Errorf("SendMessage by %s to %d: %v", login, id, err)
	}
	return mid
}

func (e eventsEnv) subscribe(t *testing.T, login string) *chat.Subscription {
	t.Helper()
	sub, err := e.svc.Subscribe(caller(login))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return sub
}

// collect takes from sub until it has n events, failing after a while.
func collect(t *testing.T, sub *chat.Subscription, n int) []chat.MID {
	t.Helper()
	var got []chat.MID
	deadline := time.After(10 * time.Second)
	for len(got) < n {
		select {
		case <-sub.Ready():
			evs, err := sub.Take()
			for _, ev := range evs {
				got = append(got, ev.MID)
			}
			if err != nil {
				t.Fatalf("subscription ended after %v: %v", got, err)
			}
		case <-deadline:
			t.Fatalf("got %v, want %d events", got, n)
		}
	}
	return got
}

// quiet fails if sub has anything within a short while.
func quiet(t *testing.T, sub *chat.Subscription, why string) {
	t.Helper()
	select {
	case <-sub.Ready():
		evs, err := sub.Take()
		if len(evs) > 0 || err != nil {
			t.Fatalf("%s: got %v, %v", why, mids(evs), err)
		}
	case <-time.After(200 * time.Millisecond):
	}
}

func mids(evs []chat.Event) []chat.MID {
	out := make([]chat.MID, len(evs))
	for i, ev := range evs {
		out[i] = ev.MID
	}
	return out
}

// replay reads login's whole stream from the log, after after up to upTo.
func (e eventsEnv) replay(t *testing.T, login string, after, upTo chat.MID) []chat.Event {
	t.Helper()
	var out []chat.Event
	for {
		evs, more, err := e.svc.EventsFor(context.Background(), caller(login), after, upTo, 7)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, evs...)
		if !more {
			return out
		}
		after = evs[len(evs)-1].MID
	}
}

func lastMID(t *testing.T, e eventsEnv) chat.MID {
	t.Helper()
	m, err := e.db.ChatStore().LastMID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A message committed while a lower MID is still in flight waits for it:
// a stream shows 10 before 11 even when 11 committed first, and a stream
// opened meanwhile starts below 10.
func TestEventsWaitForLowerMIDs(t *testing.T) {
	eachEventsEngine(t, func(t *testing.T, e eventsEnv, engine storage.Engine) {
		g1 := e.group(t, "a", "b")
		g2 := e.group(t, "a", "c")
		sub := e.subscribe(t, "a")

		g := newGate()
		var low chat.MID
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			low = e.post(t, context.WithValue(context.Background(), gateKey{}, g), "b", g1, "first")
		}()
		<-g.reached
		high := e.post(t, context.Background(), "c", g2, "second")
		quiet(t, sub, "a message above one in flight")
		late := e.subscribe(t, "a")
		if engine == storage.Postgres {
			// The lower MID is not committed: a resume may read the log
			// only below it.
			if got := e.replay(t, "a", 0, late.Start()); len(got) > 0 && got[len(got)-1].MID >= high {
				t.Fatalf("replay up to %d shows %v, above the held message", late.Start(), mids(got))
			}
		}
		g.release <- nil
		wg.Wait()
		if !(low < high) {
			t.Fatalf("MIDs %d, %d: the held message should have drawn first", low, high)
		}
		if got := collect(t, sub, 2); !slices.Equal(got, []chat.MID{low, high}) {
			t.Fatalf("stream shows %v, want %v", got, []chat.MID{low, high})
		}
		if late.Start() >= low {
			t.Fatalf("a stream opened while %d was in flight starts at %d", low, late.Start())
		}
		if got := collect(t, late, 2); !slices.Equal(got, []chat.MID{low, high}) {
			t.Fatalf("late stream shows %v, want %v", got, []chat.MID{low, high})
		}
	})
}

// A transaction that fails releases what waited behind it.
func TestEventsFailedUpdateReleases(t *testing.T) {
	eachEventsEngine(t, func(t *testing.T, e eventsEnv, _ storage.Engine) {
		g1 := e.group(t, "a", "b")
		g2 := e.group(t, "a", "c")
		sub := e.subscribe(t, "a")
		g := newGate()
		errRollback := errors.New("rolled back by the test")
		done := make(chan error, 1)
		go func() {
			_, err := e.svc.SendMessage(context.WithValue(context.Background(), gateKey{}, g), caller("b"), chat.Post{Group: g1, Text: "lost"})
			done <- err
		}()
		<-g.reached
		high := e.post(t, context.Background(), "c", g2, "kept")
		g.release <- errRollback
		if err := <-done; !errors.Is(err, errRollback) {
			t.Fatalf("held update: %v", err)
		}
		// On SQLite the held update had committed before it reported
		// failure (a commit whose outcome is unknown): the service treats
		// it as failed, and a stream that resumes finds it in the log.
		if got := collect(t, sub, 1); !slices.Equal(got, []chat.MID{high}) {
			t.Fatalf("stream shows %v, want only %d", got, high)
		}
		quiet(t, sub, "after the failure")
	})
}

// Each login's stream holds what was due to it and its own messages, the
// same live and read back from the log; a removed member gets the
// notice of her removal and nothing after it.
func TestEventsAudience(t *testing.T) {
	eachEventsEngine(t, func(t *testing.T, e eventsEnv, engine storage.Engine) {
		ctx := context.Background()
		start := lastMID(t, e)
		subs := map[string]*chat.Subscription{}
		for _, l := range []string{"a", "b", "c", "d", "e"} {
			subs[l] = e.subscribe(t, l)
		}
		id, err := e.svc.AddGroup(ctx, caller("a"), "g", "", invitees("b", "c")) // NG a, b, c
		if err != nil {
			t.Fatal(err)
		}
		mustJoin(t, env{svc: e.svc}, id, "b", "c") // EG a, b; EG a, b, c
		byA := e.post(t, ctx, "a", id, "from a")   // b, c, and a's own
		byB := e.post(t, ctx, "b", id, "from b")   // a, c, and b's own
		if err := e.svc.RemoveMembers(ctx, caller("a"), id, "", []string{"c"}); err != nil {
			t.Fatal(err) // EG a, b, c
		}
		afterRemoval := e.post(t, ctx, "a", id, "c is gone") // b, a
		if err := e.svc.DeleteMessage(ctx, caller("a"), id, byB, ""); err != nil {
			t.Fatal(err) // DM a, b
		}
		other, err := e.svc.AddGroup(ctx, caller("d"), "other", "", invitees("a")) // NG d, a
		if err != nil {
			t.Fatal(err)
		}
		if err := e.svc.DeleteGroup(ctx, caller("d"), other, ""); err != nil {
			t.Fatal(err) // DG d, a
		}
		if _, err := e.svc.StoreDirect(ctx, caller("d"), chat.Direct{To: "e", Text: "one to one"}); err != nil {
			t.Fatal(err) // no stream carries it
		}
		want := map[string][]chat.Kind{
			"a": {"NG", "EG", "EG", "MSG", "MSG", "EG", "MSG", "DM", "NG", "DG"},
			"b": {"NG", "EG", "EG", "MSG", "MSG", "EG", "MSG", "DM"},
			"c": {"NG", "EG", "MSG", "MSG", "EG"},
			"d": {"NG", "DG"},
		}
		end := lastMID(t, e)
		for l, kinds := range want {
			var live []chat.Event
			for len(live) < len(kinds) {
				select {
				case <-subs[l].Ready():
					evs, err := subs[l].Take()
					if err != nil {
						t.Fatal(err)
					}
					live = append(live, evs...)
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: got %v, want %v", l, kindsOf(live), kinds)
				}
			}
			if !slices.Equal(kindsOf(live), kinds) {
				t.Errorf("%s's stream: %v, want %v", l, kindsOf(live), kinds)
			}
			quiet(t, subs[l], l+"'s stream after its events")
			// The log lost the deleted group's events but its DG.
			var kept []chat.MID
			for _, ev := range live {
				if ev.Group != other || ev.Kind == chat.KindDeleteGroup {
					kept = append(kept, ev.MID)
				}
			}
			if got := mids(e.replay(t, l, start, end)); !slices.Equal(got, kept) {
				t.Errorf("%s's stream from the log: %v, live %v", l, got, kept)
			}
			for _, ev := range live {
				if l == "c" && ev.MID == afterRemoval {
					t.Errorf("c got a message posted after her removal")
				}
			}
		}
		if !slices.Contains(mids(e.replay(t, "a", start, end)), byA) {
			t.Errorf("a's own message is not on her stream")
		}
		quiet(t, subs["e"], "e, in no group, with a stored direct message")
	})
}

func kindsOf(evs []chat.Event) []chat.Kind {
	out := make([]chat.Kind, len(evs))
	for i, ev := range evs {
		out[i] = ev.Kind
	}
	return out
}

// Posts to many groups at once, committing in any order: every stream
// shows strictly increasing MIDs with nothing missing, and a stream that
// opens in the middle and reads the log up to its start, then goes live,
// shows exactly what the log holds.
func TestEventsConcurrentCommits(t *testing.T) {
	eachEventsEngine(t, func(t *testing.T, e eventsEnv, engine storage.Engine) {
		const groups, posts = 6, 30
		ids := make([]chat.GroupID, groups)
		for i := range ids {
			ids[i] = e.group(t, "a", "b")
		}
		start := lastMID(t, e)
		early := e.subscribe(t, "a")
		var late *chat.Subscription
		var lateOnce sync.Once
		var wg sync.WaitGroup
		for i, id := range ids {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range posts {
					e.post(t, context.Background(), "b", id, fmt.Sprintf("%d/%d", i, n))
					if i == 0 && n == posts/2 {
						lateOnce.Do(func() {
							var err error
							if late, err = e.svc.Subscribe(caller("a")); err != nil {
								t.Error(err)
							}
						})
					}
				}
			}()
		}
		wg.Wait()
		if late == nil {
			t.FailNow()
		}
		defer late.Close()
		end := lastMID(t, e)
		want := mids(e.replay(t, "a", start, end))
		if len(want) != groups*posts {
			t.Fatalf("the log holds %d messages for a, want %d", len(want), groups*posts)
		}
		if got := collect(t, early, len(want)); !slices.Equal(got, want) {
			t.Fatalf("stream differs from the log:\n got %v\nwant %v", got, want)
		}
		resumed := mids(e.replay(t, "a", start, late.Start()))
		live := collect(t, late, len(want)-len(resumed))
		got := append(resumed, live...)
		if !slices.Equal(got, want) {
			t.Fatalf("log up to %d then live differs from the log:\n got %v\nwant %v", late.Start(), got, want)
		}
	})
}

// Posts to one group at once, batched by the store, and refusals among
// them: the stream shows the committed ones as the log has them.
func TestEventsOfOneBusyGroup(t *testing.T) {
	eachEventsEngine(t, func(t *testing.T, e eventsEnv, engine storage.Engine) {
		id := e.group(t, "a", "b", "c")
		start := lastMID(t, e)
		sub := e.subscribe(t, "a")
		const posts = 60
		var wg sync.WaitGroup
		errs := make([]error, posts)
		for n := range posts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				from := []string{"b", "c", "d"}[n%3] // d is no member
				_, errs[n] = e.svc.SendMessage(context.Background(), caller(from), chat.Post{Group: id, Text: fmt.Sprint(n)})
			}()
		}
		wg.Wait()
		for n, err := range errs {
			switch {
			case n%3 == 2 && !errors.Is(err, chat.ErrNotMember):
				t.Errorf("post %d by a non-member: %v", n, err)
			case n%3 != 2 && err != nil:
				t.Errorf("post %d: %v", n, err)
			}
		}
		want := mids(e.replay(t, "a", start, lastMID(t, e)))
		if len(want) != posts*2/3 {
			t.Fatalf("the log holds %d messages for a, want %d", len(want), posts*2/3)
		}
		if got := collect(t, sub, len(want)); !slices.Equal(got, want) {
			t.Fatalf("stream differs from the log:\n got %v\nwant %v", got, want)
		}
	})
}

// A subscription that is not read ends once its backlog is full, rather
// than hold every event; closing the streams ends the others.
func TestEventsBacklogAndClose(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		db := testkit.Open(t, engine)
		accounts := registrar.NewAccounts(db.AccountStore(), "test")
		for _, l := range []string{"a", "b"} {
			if err := accounts.Add(context.Background(), l, "pw", l); err != nil {
				t.Fatal(err)
			}
		}
		svc := chat.NewService(db.ChatStore())
		if _, err := svc.Subscribe(caller("a")); !errors.Is(err, chat.ErrStreamsClosed) {
			t.Fatalf("Subscribe before OpenEvents: %v", err)
		}
		if err := svc.OpenEvents(context.Background()); err != nil {
			t.Fatal(err)
		}
		e := eventsEnv{db: db, svc: svc}
		id := e.group(t, "a", "b")
		slow, reader := e.subscribe(t, "a"), e.subscribe(t, "b")
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := range 130 {
					e.post(t, context.Background(), "b", id, fmt.Sprintf("%d-%d", w, n))
				}
			}()
		}
		// b's own messages reach her reader too; it keeps up.
		got := collect(t, reader, 8*130)
		if !slices.IsSorted(got) {
			t.Fatalf("reader's events are out of order")
		}
		wg.Wait()
		<-slow.Ready()
		if evs, err := slow.Take(); !errors.Is(err, chat.ErrSlowReader) || len(evs) != 0 {
			t.Fatalf("slow subscription: %d events, %v; want ErrSlowReader", len(evs), err)
		}
		svc.CloseEvents()
		<-reader.Ready()
		if _, err := reader.Take(); !errors.Is(err, chat.ErrStreamsClosed) {
			t.Fatalf("after CloseEvents: %v", err)
		}
		if _, err := svc.Subscribe(caller("a")); !errors.Is(err, chat.ErrStreamsClosed) {
			t.Fatalf("Subscribe after CloseEvents: %v", err)
		}
	})
}
