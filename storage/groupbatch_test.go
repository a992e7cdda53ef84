package storage_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gchd/chat"
	"gchd/internal/testkit"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// postTo appends a message to group id as chat's sendMessage does. The
// group and members it reads are what a read outside would.
func postTo(ctx context.Context, s chat.Store, id chat.GroupID, body string) error {
	return s.UpdateIn(ctx, id, func(tx chat.Tx) error {
		g, err := tx.LockGroup(ctx, id)
		if err != nil {
			return err
		}
		members, err := tx.Members(ctx, id)
		if err != nil {
			return err
		}
		wantG, err := s.Group(ctx, id)
		if err != nil {
			return err
		}
		want, err := s.Members(ctx, id)
		if err != nil {
			return err
		}
		if !reflect.DeepEqual(g, wantG) || !reflect.DeepEqual(members, want) {
			return fmt.Errorf("in the update, group %+v and members %+v; outside, %+v and %+v", g, members, wantG, want)
		}
		to := make([]string, 0, len(members))
		for _, m := range members {
			to = append(to, m.Login)
		}
		_, err = tx.AppendEvent(ctx, chat.Event{Group: id, Kind: chat.KindMessage, Sender: "a", Body: body, Time: storagetest.T0}, to)
		return err
	})
}

// holdGroup runs an update of group g that holds its transaction open,
// so that the updates started meanwhile queue behind it; release lets it
// commit and waits for that.
func holdGroup(t *testing.T, s chat.Store, g chat.GroupID) (release func()) {
	held, let, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- s.UpdateIn(context.Background(), g, func(tx chat.Tx) error {
			close(held)
			<-let
			return nil
		})
	}()
	<-held
	return func() {
		t.Helper()
		close(let)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Posts that queue behind a busy group share transactions: far fewer
// commits than posts.
func TestGroupUpdatesShareCommits(t *testing.T) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		var updates atomic.Int64
		dsn := testkit.DSN(t, e)
		testkit.AddAccounts(t, dsn, "test", "a", "c") // b is a guest
		db := testkit.OpenDSN(t, dsn, storage.Options{Observe: func(op string, _ time.Duration, _ error) {
			if op == "chat_update" {
				updates.Add(1)
			}
		}})
		ctx := context.Background()
		s := db.ChatStore()
		g := storagetest.NewLog(t, s, 0).ID

		release := holdGroup(t, s, g)
		before := updates.Load()
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = postTo(ctx, s, g, fmt.Sprint(i)) }()
		}
		time.Sleep(100 * time.Millisecond)
		release()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("post %d: %v", i, err)
			}
		}
		// The held one, then the others in a batch or two (a post that
		// came late may make its own).
		if got := updates.Load() - before; got > 4 {
			t.Errorf("%d posts took %d transactions", n, got)
		}
	})
}

// Two nodes sharing a PostgreSQL database post to the same groups at once:
// their batches, one group each, never deadlock, every post commits, and
// each group's log only ever grows at its end.
func TestGroupUpdatesOfTwoNodes(t *testing.T) {
	dsn := testkit.DSN(t, storage.Postgres)
	ctx := context.Background()
	var nodes [2]*storage.DB
	for i := range nodes {
		nodes[i] = testkit.OpenDSN(t, dsn, storage.Options{})
	}
	var groups []chat.GroupID
	for range 3 {
		groups = append(groups, storagetest.NewLog(t, nodes[0].ChatStore(), 0).ID)
	}

	stop := make(chan struct{})
	var readers sync.WaitGroup
	snapshots := make([][][]chat.MID, len(groups))
	for gi, g := range groups {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				evs, err := nodes[gi%2].ChatStore().Events(ctx, g, 0, 10000)
				if err != nil {
					t.Error(err)
					return
				}
				var mids []chat.MID
				for _, ev := range evs {
					mids = append(mids, ev.MID)
				}
				snapshots[gi] = append(snapshots[gi], mids)
			}
		}()
	}

	const perWorker = 40
	postCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := nodes[w%2].ChatStore()
			for i := range perWorker {
				// Workers walk the groups in different orders.
				g := groups[(i+w)%len(groups)]
				if w%3 == 1 {
					g = groups[(len(groups)*perWorker-i-w)%len(groups)]
				}
				if err := postTo(postCtx, s, g, fmt.Sprintf("w%d-%d", w, i)); err != nil {
					failed.Add(1)
					t.Errorf("worker %d post %d: %v", w, i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	if failed.Load() > 0 {
		return
	}
	total := 0
	for gi, g := range groups {
		evs, err := nodes[0].ChatStore().Events(ctx, g, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		var final []chat.MID
		for _, ev := range evs {
			final = append(final, ev.MID)
		}
		total += len(final)
		for _, snap := range snapshots[gi] {
			if len(snap) > len(final) || !slices.Equal(snap, final[:len(snap)]) {
				t.Fatalf("group %d: a reader saw %v, not a prefix of the final log", g, snap)
			}
		}
	}
	if total != 16*perWorker {
		t.Errorf("the logs hold %d posts, want %d", total, 16*perWorker)
	}
}

// The events a batch appends are written together on PostgreSQL: each
// post gets its own MID with its deliveries, an update that reads after
// appending sees what the batch appended before it, and an event the
// database refuses (a NUL byte: PostgreSQL's text has none; SQLite takes
// it) fails its post alone.
func TestGroupBatchWritesEventsTogether(t *testing.T) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		dsn := testkit.DSN(t, e)
		testkit.AddAccounts(t, dsn, "test", "a", "b", "c")
		db := testkit.OpenDSN(t, dsn, storage.Options{})
		ctx := context.Background()
		s := db.ChatStore()
		g := storagetest.NewLog(t, s, 0).ID

		release := holdGroup(t, s, g)
		const n = 12
		var wg sync.WaitGroup
		errs := make([]error, n)
		mids := make([]chat.MID, n)
		bodies := make([]string, n)
		for i := range n {
			bodies[i] = fmt.Sprintf("post %d", i)
			if i == 5 {
				bodies[i] = "nul \x00 byte"
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.UpdateIn(ctx, g, func(tx chat.Tx) error {
					mid, err := tx.AppendEvent(ctx, chat.Event{Group: g, Kind: chat.KindMessage, Sender: "a", Body: bodies[i], Time: storagetest.T0}, []string{"b", "c"})
					if err != nil {
						return err
					}
					mids[i] = mid
					if i%3 != 0 {
						return nil
					}
					// This update reads its group's log: it must find its
					// own event, written before the read.
					evs, err := tx.Events(ctx, g, mid-1, 10)
					if err != nil {
						return err
					}
					if len(evs) == 0 || evs[0].MID != mid || evs[0].Body != bodies[i] {
						return fmt.Errorf("after appending MID %d, the log from there holds %+v", mid, evs)
					}
					return nil
				})
			}()
		}
		time.Sleep(100 * time.Millisecond)
		release()
		wg.Wait()
		want := n
		if e == storage.Postgres {
			want = n - 1
		}
		seen := map[chat.MID]bool{}
		for i, err := range errs {
			if i == 5 && e == storage.Postgres {
				if err == nil {
					t.Errorf("the post with a NUL byte succeeded")
				}
				continue
			}
			if err != nil {
				t.Errorf("post %d: %v", i, err)
				continue
			}
			if seen[mids[i]] {
				t.Errorf("MID %d given twice", mids[i])
			}
			seen[mids[i]] = true
			ev, err := s.Event(ctx, mids[i])
			if err != nil || ev.Body != bodies[i] {
				t.Errorf("post %d: MID %d holds %+v (%v)", i, mids[i], ev, err)
			}
		}
		evs, err := s.Events(ctx, g, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) != want {
			t.Errorf("the log holds %d events, want %d", len(evs), want)
		}
		for _, login := range []string{"b", "c"} {
			pending, err := db.DeliveryStore().PendingFor(ctx, login, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			if len(pending) != want {
				t.Errorf("%s has %d pending deliveries, want %d", login, len(pending), want)
			}
		}
	})
}
