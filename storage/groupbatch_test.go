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

// Posts that queue behind a busy group share transactions: far fewer
// commits than posts.
func TestGroupUpdatesShareCommits(t *testing.T) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		var updates atomic.Int64
		dsn := testkit.DSN(t, e)
		testkit.AddAccounts(t, dsn, "test", "a", "c") // b is a guest
		db, err := storage.Open(context.Background(), dsn, storage.Options{Observe: func(op string, _ time.Duration, _ error) {
			if op == "chat_update" {
				updates.Add(1)
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		ctx := context.Background()
		s := db.ChatStore()
		g := storagetest.NewLog(t, s, 0).ID

		held, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
		go func() {
			done <- s.UpdateIn(ctx, g, func(tx chat.Tx) error {
				close(held)
				<-release
				return nil
			})
		}()
		<-held
		before := updates.Load()
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Add(1)
			go func() { defer wg.Done(); errs[i] = postTo(ctx, s, g, fmt.Sprint(i)) }()
		}
		time.Sleep(100 * time.Millisecond)
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
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
		db, err := storage.Open(ctx, dsn, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		nodes[i] = db
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
