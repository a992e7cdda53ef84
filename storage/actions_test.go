package storage_test

import (
	"context"
	"testing"

	"gchd/chat"
	"gchd/storage"
)

// TestNotificationActions: every action of a notification reads back as
// written, and rows that hold the codes of older versions read back alike.
func TestNotificationActions(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		written := map[chat.MID]chat.Action{}
		mustUpdate(t, s, func(tx chat.Tx) error {
			for a := chat.ActionCreateGroup; a <= chat.ActionDeleteMessage; a++ {
				mid, err := tx.AppendEvent(ctx, chat.Event{Group: 1, Kind: chat.KindEditGroup, Sender: "a", Action: a, Time: t0}, nil)
				if err != nil {
					return err
				}
				written[mid] = a
			}
			return nil
		})
		for mid, want := range written {
			ev, err := s.Event(ctx, mid)
			if err != nil || ev.Action != want || ev.Body != "" {
				t.Errorf("event %d = %+v, %v; want action %d and no body", mid, ev, err, want)
			}
		}
		if err := db.ExecForTest(ctx, `INSERT INTO events (group_id, kind, sender, sender_dn, body, ref, created_at)
			VALUES (2, 'EG', 'a', 'A', 'delAdmin', 0, 0)`); err != nil {
			t.Fatal(err)
		}
		evs, err := s.Events(ctx, 2, 0, 10)
		if err != nil || len(evs) != 1 || evs[0].Action != chat.ActionRevokeAdmin {
			t.Fatalf("an older row's delAdmin = %+v, %v; want ActionRevokeAdmin", evs, err)
		}
	})
}
