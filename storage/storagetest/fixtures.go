package storagetest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gchd/chat"
)

// T0 is the time the fixtures happen at: with microseconds, which every
// engine must keep.
var T0 = time.Date(2026, 11, 25, 12, 0, 0, 123456000, time.UTC)

// MustUpdate runs fn in one transaction of s and fails the test on an error.
func MustUpdate(t testing.TB, s chat.Store, fn func(chat.Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("update: %v", err)
	}
}

// LogFixture is a group of a (sender), b and c (joined) with messages of a
// and b, every one due to all three.
type LogFixture struct {
	ID   chat.GroupID
	MIDs []chat.MID // in order; even ones by a, odd ones by b
}

// NewLog makes a LogFixture of n messages.
func NewLog(t testing.TB, s chat.Store, n int) LogFixture {
	t.Helper()
	ctx := context.Background()
	var f LogFixture
	MustUpdate(t, s, func(tx chat.Tx) error {
		var err error
		if f.ID, err = tx.CreateGroup(ctx, chat.Group{Subject: "g", Owner: "a", Created: T0}); err != nil {
			return err
		}
		for _, l := range []string{"a", "b", "c"} {
			if err := tx.PutMember(ctx, chat.Member{Group: f.ID, Login: l, DisplayName: l, Status: chat.StatusJoined, Since: T0}); err != nil {
				return err
			}
		}
		for i := 0; i < n; i++ {
			sender := []string{"a", "b"}[i%2]
			mid, err := tx.AppendEvent(ctx, chat.Event{Group: f.ID, Kind: chat.KindMessage, Sender: sender, Body: fmt.Sprint(i), Time: T0.Add(time.Duration(i) * time.Second)}, []string{"a", "b", "c"})
			if err != nil {
				return err
			}
			f.MIDs = append(f.MIDs, mid)
		}
		return nil
	})
	return f
}

// MemberGroup is login's entry for group id in GroupsOf.
func MemberGroup(t testing.TB, s chat.Store, login string, id chat.GroupID) chat.MemberGroup {
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
