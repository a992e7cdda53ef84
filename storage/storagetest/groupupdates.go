package storagetest

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
)

// post is what chat's sendMessage does in an update of one group: lock it,
// read its members and append a message due to them.
func post(ctx context.Context, tx chat.Tx, id chat.GroupID, body string) (chat.MID, error) {
	if _, err := tx.LockGroup(ctx, id); err != nil {
		return 0, err
	}
	members, err := tx.Members(ctx, id)
	if err != nil {
		return 0, err
	}
	var to []string
	for _, m := range members {
		to = append(to, m.Login)
	}
	return tx.AppendEvent(ctx, chat.Event{Group: id, Kind: chat.KindMessage, Sender: "a", Body: body, Time: T0}, to)
}

// holdGroup starts an update of group id that holds it until the returned
// function is called, so that the updates started meanwhile queue up
// behind it and are batched together where the store batches.
func holdGroup(t *testing.T, s chat.Store, id chat.GroupID) (release func()) {
	t.Helper()
	held, done := make(chan struct{}), make(chan error, 1)
	unblock := make(chan struct{})
	go func() {
		done <- s.UpdateIn(context.Background(), id, func(tx chat.Tx) error {
			if _, err := tx.LockGroup(context.Background(), id); err != nil {
				return err
			}
			select {
			case <-held:
			default:
				close(held)
			}
			<-unblock
			return nil
		})
	}()
	<-held
	return func() {
		close(unblock)
		if err := <-done; err != nil {
			t.Errorf("holding update: %v", err)
		}
	}
}

// bodies maps the bodies of group id's log to their MIDs, and returns the
// log's MIDs in order.
func bodies(t *testing.T, s chat.Store, id chat.GroupID) (map[string]chat.MID, []chat.MID) {
	t.Helper()
	evs, err := s.Events(context.Background(), id, 0, 10000)
	if err != nil {
		t.Fatalf("events of %d: %v", id, err)
	}
	got := map[string]chat.MID{}
	var mids []chat.MID
	for _, ev := range evs {
		got[ev.Body] = ev.MID
		mids = append(mids, ev.MID)
	}
	return got, mids
}

// Concurrent posts to one group all commit, and its log only ever grows at
// its end: what a reader sees at any moment is a prefix of the final log,
// so MIDs are in commit order.
func testUpdateInCommitsInOrder(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	g := NewLog(t, s, 0).ID
	const n = 80

	stop := make(chan struct{})
	var snapshots [][]chat.MID
	var readErr error
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs, err := s.Events(ctx, g, 0, 10000)
			if err != nil {
				readErr = err
				return
			}
			mids := make([]chat.MID, len(evs))
			for i, ev := range evs {
				mids[i] = ev.MID
			}
			snapshots = append(snapshots, mids)
		}
	}()

	release := holdGroup(t, s, g)
	mids := make([]chat.MID, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.UpdateIn(ctx, g, func(tx chat.Tx) error {
				var err error
				mids[i], err = post(ctx, tx, g, fmt.Sprint("post ", i))
				return err
			})
		}()
	}
	time.Sleep(50 * time.Millisecond) // the posts queue behind the held group
	release()
	wg.Wait()
	close(stop)
	readers.Wait()
	if readErr != nil {
		t.Fatal(readErr)
	}

	got, final := bodies(t, s, g)
	for i := range n {
		body := fmt.Sprint("post ", i)
		if errs[i] != nil || got[body] != mids[i] {
			t.Errorf("post %d: %v, MID %d; the log has it at %d", i, errs[i], mids[i], got[body])
		}
	}
	if len(final) != n {
		t.Errorf("the log has %d events, want %d", len(final), n)
	}
	for _, snap := range snapshots {
		if len(snap) > len(final) || !slices.Equal(snap, final[:len(snap)]) {
			t.Fatalf("a reader saw %v, not a prefix of the final log %v", snap, final)
		}
	}
}

// In a batch of one group's updates, each fails or panics alone, whether
// before it writes, after it, or in a statement the database refuses: it
// leaves nothing, and the others commit.
func testUpdateInFailsAlone(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	g := NewLog(t, s, 0).ID
	const n = 70
	refusal := func(i int) error { return fmt.Errorf("refused %d", i) }
	// What update i does, by i%7.
	const (
		succeeds = iota
		failsBefore
		failsAfter
		panicsBefore
		panicsAfter
		badStatement // a second delivery of one event to one login
		succeedsToo
	)

	release := holdGroup(t, s, g)
	mids := make([]chat.MID, n)
	errs := make([]error, n)
	panics := make([]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { panics[i] = recover() }()
			errs[i] = s.UpdateIn(ctx, g, func(tx chat.Tx) error {
				mids[i] = 0
				switch i % 7 {
				case failsBefore:
					if _, err := tx.LockGroup(ctx, g); err != nil {
						return err
					}
					return refusal(i)
				case panicsBefore:
					panic(fmt.Sprint("panic ", i))
				case badStatement:
					if _, err := post(ctx, tx, g, fmt.Sprint("post ", i)); err != nil {
						return err
					}
					_, err := tx.AppendEvent(ctx, chat.Event{Group: g, Kind: chat.KindMessage, Sender: "a", Body: fmt.Sprint("twice ", i), Time: T0}, []string{"b", "b"})
					if err == nil {
						err = errors.New("an event was due twice to one login")
					}
					return err
				}
				var err error
				if mids[i], err = post(ctx, tx, g, fmt.Sprint("post ", i)); err != nil {
					return err
				}
				switch i % 7 {
				case failsAfter:
					return refusal(i)
				case panicsAfter:
					panic(fmt.Sprint("panic ", i))
				}
				return nil
			})
		}()
	}
	time.Sleep(50 * time.Millisecond)
	release()
	wg.Wait()

	got, final := bodies(t, s, g)
	committed := 0
	for i := range n {
		body := fmt.Sprint("post ", i)
		mid, written := got[body]
		switch i % 7 {
		case succeeds, succeedsToo:
			committed++
			if errs[i] != nil || panics[i] != nil || !written || mid != mids[i] {
				t.Errorf("update %d: %v, %v; MID %d, in the log at %d", i, errs[i], panics[i], mids[i], mid)
			}
		case failsBefore, failsAfter:
			if errs[i] == nil || errs[i].Error() != refusal(i).Error() || written {
				t.Errorf("update %d failed with %v; in the log: %v", i, errs[i], written)
			}
		case panicsBefore, panicsAfter:
			if panics[i] != fmt.Sprint("panic ", i) || written {
				t.Errorf("update %d panicked with %v; in the log: %v", i, panics[i], written)
			}
		case badStatement:
			if errs[i] == nil || written {
				t.Errorf("update %d with a refused statement: %v; in the log: %v", i, errs[i], written)
			}
		}
	}
	for body := range got {
		if strings.HasPrefix(body, "twice ") {
			t.Errorf("the log has %q of a refused statement", body)
		}
	}
	if len(final) != committed {
		t.Errorf("the log has %d events, want %d: %v", len(final), committed, got)
	}
}

// Concurrent updates of a group that does not exist find it missing, each.
func testUpdateInMissingGroup(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	g := NewLog(t, s, 0).ID + 100
	errs := make([]error, 20)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.UpdateIn(ctx, g, func(tx chat.Tx) error {
				_, err := post(ctx, tx, g, "lost")
				return err
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, chat.ErrNoGroup) {
			t.Errorf("update %d of a missing group: %v", i, err)
		}
	}
}

// An update of one group may lock nothing else: the store may share its
// transaction with other updates of the group.
func testUpdateInLocksOneGroup(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Chat
	g1, g2 := NewLog(t, s, 0).ID, NewLog(t, s, 0).ID
	for name, lock := range map[string]func(tx chat.Tx) error{
		"another group": func(tx chat.Tx) error { _, err := tx.LockGroup(ctx, g2); return err },
		"a sender":      func(tx chat.Tx) error { return tx.LockSender(ctx, "a") },
	} {
		err := s.UpdateIn(ctx, g1, func(tx chat.Tx) error {
			if _, err := post(ctx, tx, g1, name); err != nil {
				return err
			}
			return lock(tx)
		})
		if err == nil {
			t.Errorf("an update of group %d locked %s", g1, name)
		}
		if got, _ := bodies(t, s, g1); got[name] != 0 {
			t.Errorf("an update of group %d that locked %s left its post", g1, name)
		}
	}
}
