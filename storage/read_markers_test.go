package storage_test

import (
	"context"
	"testing"

	"gchd/chat"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// Members of a database from before read markers start at the newest
// message they read.
func TestReadMarkerMigration(t *testing.T) {
	eachDB(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := db.ChatStore()
		f := storagetest.NewLog(t, s, 6)
		mustUpdate(t, s, func(tx chat.Tx) error {
			if err := tx.SetReceipt(ctx, f.MIDs[3], "c", t0, t0); err != nil {
				return err
			}
			return tx.SetReceipt(ctx, f.MIDs[1], "c", t0, t0)
		})
		for _, q := range []string{
			// Back to version 5: the later migrations first.
			"ALTER TABLE bindings DROP COLUMN epoch",
			"DELETE FROM schema_migrations WHERE version = 9",
			"DROP TABLE nodes",
			"DELETE FROM schema_migrations WHERE version = 8",
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
		if g := storagetest.MemberGroup(t, s, "c", f.ID); g.ReadMID != f.MIDs[3] || g.Unread != 2 {
			t.Fatalf("c after the migration: %+v, want the marker at %d and 2 unread", g, f.MIDs[3])
		}
		if g := storagetest.MemberGroup(t, s, "b", f.ID); g.ReadMID != 0 || g.Unread != 3 {
			t.Fatalf("b after the migration: %+v", g)
		}
	})
}
