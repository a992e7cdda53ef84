package app

import (
	"fmt"
	"maps"
	"net/url"
	"strings"
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
)

// Invalid UTF-8 is refused with 400, over HTTP (in mb, gs and dn, in a form,
// a query string or as an escaped lone surrogate, which Go's JSON decoder
// would turn into U+FFFD just as silently) and with 400 over SIP (a post to
// a group, a message to be stored for an offline user). Nothing is stored.
func TestSecurityInvalidUTF8(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		before := s.rowCounts()

		for _, tt := range []struct {
			name, gm, pm string
		}{
			{"mb raw byte", "sendMessage", fmt.Sprintf("{\"id\":%d,\"mb\":\"caf\xe9\"}", id)},
			{"mb truncated sequence", "sendMessage", fmt.Sprintf("{\"id\":%d,\"mb\":\"ok \xe2\x82\"}", id)},
			{"mb lone surrogate escape", "sendMessage", fmt.Sprintf(`{"id":%d,"mb":"x\ud800y"}`, id)},
			{"mb lone low surrogate escape", "sendMessage", fmt.Sprintf(`{"id":%d,"mb":"\udc00"}`, id)},
			{"dn of a message", "sendMessage", fmt.Sprintf("{\"id\":%d,\"mb\":\"hi\",\"dn\":\"\xff\"}", id)},
			{"subject of a new group", "addGroup", "{\"gs\":\"G\xc0\xaf\"}"},
			{"subject", "setGroupSubject", fmt.Sprintf("{\"id\":%d,\"gs\":\"\xfe\"}", id)},
			{"invitee dn", "addGroup", "{\"gs\":\"G\",\"gm\":[{\"l\":\"non\",\"dn\":\"\xed\xa0\x80\"}]}"},
		} {
			if r := s.call("own", "pw-own", tt.gm, tt.pm); r.status != 400 || r.code() != 400 {
				t.Errorf("%s (form): %s, want 400", tt.name, r)
			}
			q := url.Values{"gm": {tt.gm}, "pm": {tt.pm}}
			if r := s.get("/gch.ashx", "own", "pw-own", q); r.code() != 400 {
				t.Errorf("%s (query): %s, want 400", tt.name, r)
			}
		}
		// A valid pair of escapes is one character, and fine.
		if r := s.call("own", "pw-own", "sendMessage", fmt.Sprintf(`{"id":%d,"mb":"\ud83d\ude00 \\ud800"}`, id)); r.status != 200 {
			t.Errorf("surrogate pair: %s", r)
		}

		// SIP: mem posts to the group and writes to own, who is offline.
		mem := newPhone(t, s, "mem", "UDP")
		mem.register()
		s.must("own", "delMessage", map[string]any{"id": id, "mid": sendMID(t, s, "own", map[string]any{"id": id, "mb": "x"})})
		after := s.rowCounts()
		for _, to := range []string{fmt.Sprintf("gc-%d", id), "own"} {
			if res := mem.message(to, "caf\xe9"); res.StatusCode != 400 {
				t.Errorf("MESSAGE to %s with invalid UTF-8: %s, want 400", to, res.StartLine())
			}
		}
		if got := s.rowCounts(); !maps.Equal(got, after) {
			t.Errorf("SIP refusals changed the database: %v, then %v", after, got)
		}
		// What was accepted: the pair, the deleted "x" and its DM.
		if after["events"] != before["events"]+3 {
			t.Errorf("events %d, then %d: a refused call was stored", before["events"], after["events"])
		}
		var hist struct {
			M []struct{ MB string } `json:"m"`
		}
		s.must("mem", "getMessages", map[string]any{"id": id}).json(t, &hist)
		for _, m := range hist.M {
			if strings.ContainsRune(m.MB, '\uFFFD') {
				t.Errorf("history holds a replacement character: %q", m.MB)
			}
		}
	})
}
