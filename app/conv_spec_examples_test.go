package app

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"maps"
	"net/url"
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
)

// setLastID makes the next row of table take last+1 as its ID, as in a
// database carried over from the reference server, whose IDs did not start
// at 1. The specification's examples name group 100 and group 84278 and the
// MIDs 123 and 124; with this they exist, and the examples run verbatim.
// Only while gchd is stopped, and only upwards.
func setLastID(t *testing.T, dsn, table, column string, last int64) {
	t.Helper()
	engine, source, err := storage.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var db *sql.DB
	if engine == storage.SQLite {
		db, err = sql.Open("sqlite", "file:"+source+"?_pragma=busy_timeout(10000)")
	} else {
		db, err = sql.Open("postgres", source)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var max int64
	if err := db.QueryRowContext(ctx, fmt.Sprintf("SELECT COALESCE(MAX(%s), 0) FROM %s", column, table)).Scan(&max); err != nil {
		t.Fatal(err)
	}
	if max > last {
		t.Fatalf("%s already holds %s %d, past %d", table, column, max, last)
	}
	if engine == storage.Postgres {
		if _, err := db.ExecContext(ctx, "SELECT setval(pg_get_serial_sequence($1, $2), $3)", table, column, last); err != nil {
			t.Fatal(err)
		}
		return
	}
	// SQLite keeps AUTOINCREMENT counters in sqlite_sequence, a row per
	// table once it had its first row.
	res, err := db.ExecContext(ctx, "UPDATE sqlite_sequence SET seq = ? WHERE name = ?", last, table)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := db.ExecContext(ctx, "INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", table, last); err != nil {
			t.Fatal(err)
		}
	}
}

// Every request example of the specification (gch-api.txt), copied verbatim,
// gets over real HTTP the answer the method gives to well-formed input, on
// both engines: a trailing comma, the comma it leaves out after "id", and
// numbers as strings are read as the reference read them. Malformed pm
// still gets 400 and changes nothing.
func TestSpecExamplesVerbatim(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		db, err := storage.Open(context.Background(), cfg.Database, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		setLastID(t, cfg.Database, "chat_groups", "id", 99)
		s := start(t, cfg)

		// The logins of the examples; the owner is the "go" of getGroup's.
		const owner = "1377601"
		for _, l := range []string{owner, "1000005", "1000001", "1000002", "1002142"} {
			s.addAccount(l, "pw-"+l, l)
		}
		// example calls gm with the specification's pm and wants the code.
		example := func(login, gm, pm string, want int) reply {
			t.Helper()
			r := s.call(login, "pw-"+login, gm, pm)
			if r.status != want {
				t.Errorf("%s %s by %s: %s, want %d", gm, pm, login, r, want)
			}
			return r
		}

		// Group 100, with 1000002 and 1002142 joined.
		var g struct{ ID uint32 }
		s.must(owner, "addGroup", map[string]any{"gs": "Grupa", "gm": []map[string]string{{"l": "1000002"}, {"l": "1002142"}}}).json(t, &g)
		if g.ID != 100 {
			t.Fatalf("group %d, want 100", g.ID)
		}
		s.must("1000002", "joinGroup", map[string]any{"id": 100})
		s.must("1002142", "joinGroup", map[string]any{"id": 100})
		example(owner, "addMember", `{ "id": 100 "dn": "48500100200", "gm": [ { "l" : "1000005", "dn": "48600500600" }, { "l" : "1000001", "dn": "vippie ID" } ] }`, 200)
		example("1000005", "joinGroup", `{ "id": 100 "dn": "48500100200" }`, 200)
		example("1000001", "joinGroup", `{ "id": 100 "dn": "48500100200" }`, 200)
		example(owner, "setGroupSubject", `{ "id": 100, "gs": "Nowy temat", "dn": "48500100300" }`, 200)

		// Restart with the counters at the examples' next MID and group.
		s.stop()
		setLastID(t, cfg.Database, "events", "mid", 122)
		setLastID(t, cfg.Database, "chat_groups", "id", 84277)
		s = start(t, cfg)

		for i, from := range []string{"1000005", "1000001"} {
			r := example(from, "sendMessage", `{ "id": 100 "dn": "48500100200", "mb": "message text here" }`, 200)
			if mid := r.header.Get("X-GC-MID"); mid != fmt.Sprint(123+i) {
				t.Fatalf("message by %s has MID %s, want %d", from, mid, 123+i)
			}
		}
		example(owner, "conf Message", `{ "id" : 100 "dn" : "48500100200", "mid": 123 }`, 200)
		example(owner, "readMessage", `{ "id" : 100 "dn" : "48500100200", "mid": 124 }`, 200)
		var receipts []struct{ L, CF, RD string }
		example(owner, "getMessageInfo", `{ "id" : 100 "mid": 124 }`, 200).json(t, &receipts)
		read := false
		for _, rc := range receipts {
			read = read || (rc.L == owner && rc.CF != "" && rc.RD != "")
		}
		if !read {
			t.Errorf("getMessageInfo of 124: %+v, want the owner's cf and rd", receipts)
		}
		// The numbers of the issue, as strings.
		example(owner, "getMessageInfo", `{"id":"100","mid":"124"}`, 200)
		example("1000001", "delMessage", `{ "id" : 100 "dn" : "48500100200", "mid": 124 }`, 200)

		example(owner, "addAdmin", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, 200)
		var view struct {
			GS string
			GM []struct {
				L string
				A bool
				S string
			}
		}
		s.must(owner, "getGroup", `{ "id": 100 }`).json(t, &view)
		admins := 0
		for _, m := range view.GM {
			if m.A && (m.L == "1000002" || m.L == "1002142") {
				admins++
			}
		}
		if view.GS != "Nowy temat" || admins != 2 {
			t.Errorf("group 100 after setGroupSubject and addAdmin: %+v", view)
		}
		example(owner, "delAdmin", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, 200)
		example(owner, "delMember", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, 200)
		example("1000005", "leaveGroup", `{ "id": 100 "dn": "48500100200" }`, 200)
		s.must(owner, "getGroup", `{ "id": 100 }`).json(t, &view)
		for _, m := range view.GM {
			if (m.L == "1000002" || m.L == "1002142" || m.L == "1000005") && m.S != "l" {
				t.Errorf("%s is %q after delMember and leaveGroup, want l", m.L, m.S)
			}
		}

		// Group 84278.
		example(owner, "addGroup", `{ "gs": "Group name", "dn": "48500100200", "gm": [ { "l" : "1000005", "dn": "48600500600" }, { "l" : "1000001", "dn": "vippie ID" } ] }`, 200).json(t, &g)
		if g.ID != 84278 {
			t.Fatalf("group %d, want 84278", g.ID)
		}
		example(owner, "getGroup", `{ "id":84278 }`, 200).json(t, &view)
		if view.GS != "Group name" || len(view.GM) != 3 {
			t.Errorf("getGroup 84278: %+v", view)
		}
		avatar := jpegOf(t, 16, 16)
		if r := s.upload(owner, "pw-"+owner, `{ "id": 84278, "dn": "48500100200" }`, "file", "a.jpg", avatar); r.status != 200 {
			t.Errorf("uploadAvatar: %s", r)
		}
		if r := example(owner, "downloadAvatar", `{ "id": 84278, "t": "image", }`, 200); !bytes.Equal(r.body, avatar) {
			t.Errorf("downloadAvatar answered %d bytes, not the avatar", len(r.body))
		}
		// Pasted into a URL, as a client would.
		q := url.Values{"gm": {"downloadAvatar"}, "pm": {`{ "id": 84278, "t": "image", }`}}
		if r := s.get("/gch.ashx", owner, "pw-"+owner, q); r.status != 200 || !bytes.Equal(r.body, avatar) {
			t.Errorf("downloadAvatar by GET: %d, %d bytes", r.status, len(r.body))
		}
		example(owner, "downloadAvatar", `{"id":"84278","t":"image"}`, 200)
		example(owner, "delAvatar", `{ "id": 84278, "dn": "48500100200" }`, 200)
		// getCommonGroups' `{ "l": string }` names the type of l; no JSON
		// reader takes it. With a login in its place it is answered.
		example(owner, "getCommonGroups", `{ "l": string }`, 400)
		example(owner, "getCommonGroups", `{ "l": "1000001" }`, 200)

		// Malformed: 400, nothing changed.
		for _, bad := range []struct{ gm, pm string }{
			{"delMember", `{ "id": 84278, "gm": ["1000005" "1000001"] }`}, // a comma missing between array elements
			{"sendMessage", `{ "id": 84278, "mb": "message" "text" }`},    // two strings, no member
			{"getGroup", `{ "id":84278 `},                                 // the brace not closed
			{"sendMessage", `{ "id": 84278, "mb": "x"`},
			{"getGroup", `{ "id": "84278a" }`}, // not a number
			{"getGroup", `{ "id": "12a" }`},
			{"getGroup", `{ "id": 84278.5 }`}, // a fraction, never rounded
			{"getGroup", `{ "id": "1.5" }`},
			{"getGroup", `{ "id": 1.5 }`},
			{"getGroup", `{ "id": "4294967296" }`}, // out of range
			{"getGroup", `{ "id": "-1" }`},
			{"getGroup", `{ "id": "" }`},
			{"sendMessage", `{ "id": 84278, "mb": "x",, }`},
			{"addMember", `{ "id": 84278, "gm": [ , { "l" : "1002142" } ] }`},
			{"getMessages", `{ "id": 84278, "limit": "1.0" }`},
		} {
			before := s.rowCounts()
			r := s.call(owner, "pw-"+owner, bad.gm, bad.pm)
			if r.status != 400 || string(r.body) != "400" {
				t.Errorf("%s %s: %s, want 400", bad.gm, bad.pm, r)
			}
			if after := s.rowCounts(); !maps.Equal(before, after) {
				t.Errorf("%s %s changed the database: %v -> %v", bad.gm, bad.pm, before, after)
			}
		}

		example(owner, "delGroup", `{ "id": 100, "dn": "48500100300" }`, 200)
		if r := s.call(owner, "pw-"+owner, "getGroup", `{ "id": 100 }`); r.status != 444 {
			t.Errorf("getGroup of the deleted group 100: %s, want 444", r)
		}
	})
}
