package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gchd/chat"
	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
	"gchd/storage/storagetest"
)

// eachDB runs fn on a fresh database of each engine, for the tests of
// what is particular to storage.DB (migrations, its own methods); what the
// store interfaces promise is in storagetest (TestConformance).
func eachDB(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	testkit.Each(t, func(t *testing.T, e storage.Engine) {
		t.Parallel()
		fn(t, testkit.Open(t, e))
	})
}

var t0 = storagetest.T0

func mustUpdate(t *testing.T, s chat.Store, fn func(chat.Tx) error) {
	t.Helper()
	storagetest.MustUpdate(t, s, fn)
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

func TestMigrations(t *testing.T) {
	for _, e := range testkit.Engines() {
		t.Run(string(e), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := testkit.DSN(t, e)
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
