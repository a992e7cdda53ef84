package app

import (
	"bytes"
	"fmt"
	"image"
	"image/png"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

func setupPair(t *testing.T, s *server) uint32 {
	t.Helper()
	for _, l := range []string{"own", "mem", "non"} {
		s.addAccount(l, "pw-"+l, l)
	}
	var g struct{ ID uint32 }
	s.must("own", "addGroup", map[string]any{"gs": "g", "gm": []map[string]string{{"l": "mem"}}}).json(t, &g)
	s.must("mem", "joinGroup", map[string]any{"id": g.ID})
	return g.ID
}

// Every bad input gets its documented code, the database is unchanged, and
// the server goes on answering.
func TestBadInputChangesNothing(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		members30 := make([]map[string]string, 30)
		for i := range members30 {
			members30[i] = map[string]string{"l": fmt.Sprintf("u%02d", i)}
		}
		var pngBuf bytes.Buffer
		png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 8, 8)))
		bigJPEG := append(jpegOf(t, 8, 8), bytes.Repeat([]byte{0}, 102401)...)[:102401]

		tests := []struct {
			name string
			gm   string
			pm   string
			want int
		}{
			{"malformed JSON", "sendMessage", `{"id": 1, "mb": "x"`, 400},
			{"not an object", "sendMessage", `[1, 2]`, 400},
			{"trailing data", "sendMessage", fmt.Sprintf(`{"id": %d, "mb": "x"} {}`, id), 400},
			{"id as a string that is no number", "sendMessage", `{"id": "1x", "mb": "x"}`, 400},
			{"mb as number", "sendMessage", fmt.Sprintf(`{"id": %d, "mb": 5}`, id), 400},
			{"id missing", "sendMessage", `{"mb": "x"}`, 400},
			{"mb missing", "sendMessage", fmt.Sprintf(`{"id": %d}`, id), 400},
			{"pm missing", "sendMessage", "", 400},
			{"empty message", "sendMessage", fmt.Sprintf(`{"id": %d, "mb": ""}`, id), 400},
			{"NUL in message", "sendMessage", fmt.Sprintf(`{"id": %d, "mb": "a\u0000b"}`, id), 400},
			{"unknown gm", "sendMessages", fmt.Sprintf(`{"id": %d, "mb": "x"}`, id), 400},
			{"id does not exist", "sendMessage", `{"id": 999999, "mb": "x"}`, 444},
			{"id overflows 32 bits", "sendMessage", `{"id": 4294967296, "mb": "x"}`, 400},
			{"negative id", "getGroup", `{"id": -1}`, 400},
			{"fractional id", "getGroup", `{"id": 1.5}`, 400},
			{"mid does not exist", "confMessage", fmt.Sprintf(`{"id": %d, "mid": 123456789}`, id), 444},
			{"mid overflows 64 bits", "confMessage", fmt.Sprintf(`{"id": %d, "mid": 18446744073709551616}`, id), 400},
			{"subject of 31 characters", "addGroup", `{"gs": "` + strings.Repeat("ł", 31) + `"}`, 400},
			{"empty subject", "addGroup", `{"gs": ""}`, 400},
			{"subject missing", "addGroup", `{"gm": []}`, 400},
			{"31 participants", "addGroup", fmt.Sprintf(`{"gs": "big", "gm": %s}`, pmJSON(t, members30)), 443},
			{"member without login", "addGroup", `{"gs": "g", "gm": [{"dn": "x"}]}`, 400},
			{"members of the wrong type", "addMember", fmt.Sprintf(`{"id": %d, "gm": "mem"}`, id), 400},
			{"logins of the wrong type", "delMember", fmt.Sprintf(`{"id": %d, "gm": [{"l": "mem"}]}`, id), 400},
			{"subject too long on change", "setGroupSubject", fmt.Sprintf(`{"id": %d, "gs": "%s"}`, id, strings.Repeat("x", 31)), 400},
			{"display name with a line break", "sendMessage", fmt.Sprintf(`{"id": %d, "mb": "x", "dn": "a\r\nVia: evil"}`, id), 400},
			{"common groups without l", "getCommonGroups", `{}`, 400},
			{"history limit out of range", "getMessages", fmt.Sprintf(`{"id": %d, "limit": 100000}`, id), 400},
			{"bad media type", "downloadAvatar", fmt.Sprintf(`{"id": %d, "t": "sound"}`, id), 400},
			{"upload without a file", "uploadAvatar", fmt.Sprintf(`{"id": %d}`, id), 400},
		}
		for _, tt := range tests {
			before := s.rowCounts()
			r := s.call("own", "pw-own", tt.gm, tt.pm)
			if r.status != tt.want || string(r.body) != fmt.Sprint(tt.want) {
				t.Errorf("%s: %s, want %d as status and body", tt.name, r, tt.want)
			}
			if after := s.rowCounts(); !maps.Equal(before, after) {
				t.Errorf("%s: database changed: %v -> %v", tt.name, before, after)
			}
		}

		uploads := []struct {
			name string
			t    string
			data []byte
			want int
		}{
			{"PNG renamed to .jpg", "image", pngBuf.Bytes(), 407},
			{"avatar of 102,401 bytes", "image", bigJPEG, 411},
			{"thumbnail not JPEG", "video-thumbnail", pngBuf.Bytes(), 407},
			{"video that is a JPEG", "video", jpegOf(t, 8, 8), 407},
			{"empty file", "image", nil, 400},
		}
		for _, u := range uploads {
			before := s.rowCounts()
			r := s.upload("own", "pw-own", map[string]any{"id": id, "t": u.t}, "file", "avatar.jpg", u.data)
			if r.status != u.want || string(r.body) != fmt.Sprint(u.want) {
				t.Errorf("%s: %s, want %d", u.name, r, u.want)
			}
			if after := s.rowCounts(); !maps.Equal(before, after) {
				t.Errorf("%s: database changed: %v -> %v", u.name, before, after)
			}
		}
		// An avatar of exactly 102,400 bytes is fine.
		exact := jpegOf(t, 200, 160)
		if len(exact) < 102400 {
			exact = append(exact, make([]byte, 102400-len(exact))...) // JPEG decoders ignore trailing bytes
		}
		if r := s.upload("own", "pw-own", map[string]any{"id": id}, "file", "a.jpg", exact[:102400]); r.status != 200 {
			t.Errorf("avatar of 102,400 bytes: %s", r)
		}

		// A body over the limit is refused without being read whole.
		before := s.rowCounts()
		huge := url.Values{"gm": {"sendMessage"}, "pm": {fmt.Sprintf(`{"id": %d, "mb": "%s"}`, id, strings.Repeat("x", 1<<20))}}
		req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", strings.NewReader(huge.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("own", "pw-own")
		if r := s.do(req); r.status != 400 {
			t.Errorf("body over 1 MiB: %s", r)
		}
		if after := s.rowCounts(); !maps.Equal(before, after) {
			t.Errorf("huge body changed the database")
		}
		// Still serving.
		s.must("own", "getGroup", map[string]any{"id": id})
	})
}

func TestCodesInStatusSwitch(t *testing.T) {
	s := startEngine(t, "sqlite", func(c *configs.Config) { c.API.CodesInStatus = false })
	id := setupPair(t, s)
	r := s.call("non", "pw-non", "getGroup", map[string]any{"id": id})
	if r.status != 200 || string(r.body) != "444" {
		t.Fatalf("with codes_in_status off: %s, want HTTP 200 with body 444", r)
	}
	r = s.call("own", "pw-own", "sendMessage", map[string]any{"id": id, "mb": "x"})
	if r.status != 200 || string(r.body) != "200" || r.header.Get("X-GC-MID") == "" {
		t.Fatalf("sendMessage: %s %v", r, r.header)
	}
	// Authentication still answers 401: clients must learn to send credentials.
	if r := s.call("own", "bad", "getGroup", map[string]any{"id": id}); r.status != 401 {
		t.Fatalf("bad password: %s", r)
	}
}

// The request forms the API accepts: GET with a query string, POST forms,
// both paths, and method names in any case with spaces.
func TestRequestForms(t *testing.T) {
	s := startEngine(t, "sqlite")
	id := setupPair(t, s)
	pm := fmt.Sprintf(`{"id": %d}`, id)
	for _, path := range []string{"/gch.ashx", "/emcd/gch.ashx"} {
		for _, gm := range []string{"getGroup", "GETGROUP", "get Group"} {
			r := s.get(path, "mem", "pw-mem", url.Values{"gm": {gm}, "pm": {pm}})
			if r.status != 200 || !strings.Contains(string(r.body), `"gs":"g"`) {
				t.Errorf("GET %s gm=%s: %s", path, gm, r)
			}
		}
	}
	r := s.must("own", "sendMessage", map[string]any{"id": id, "mb": "x"})
	var mid uint64
	fmt.Sscan(r.header.Get("X-GC-MID"), &mid)
	if r := s.call("mem", "pw-mem", "conf Message", map[string]any{"id": id, "mid": mid}); r.status != 200 {
		t.Errorf("conf Message: %s", r)
	}
	var info []map[string]string
	s.must("own", "getMessageInfo", map[string]any{"id": id, "mid": mid}).json(t, &info)
	if len(info) != 1 || info[0]["l"] != "mem" || info[0]["cf"] == "" || info[0]["rd"] != "" {
		t.Errorf("getMessageInfo after conf: %v", info)
	}
	// Other HTTP methods are refused.
	req, _ := http.NewRequest(http.MethodDelete, s.base+"/gch.ashx", nil)
	req.SetBasicAuth("own", "pw-own")
	if r := s.do(req); r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, POST" {
		t.Errorf("DELETE: %s", r)
	}
}

func TestGroupJSON(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		for _, l := range []string{"own", "mem"} {
			s.addAccount(l, "pw-"+l, l)
		}
		var g struct{ ID uint32 }
		s.must("own", "addGroup", map[string]any{"gs": "Grupa 2", "dn": "48502159212", "gm": []map[string]string{
			{"l": "mem", "dn": "48600316058"}, {"l": "48500103102", "dn": "48500103102"},
		}}).json(t, &g)
		var got struct {
			GS, GO, TS, AE, AT, VE, VT string
			GM                         []struct {
				L, DN, S, TS string
				A            bool
			}
			GG []struct{ L, DN, TS string }
		}
		r := s.must("mem", "getGroup", map[string]any{"id": g.ID})
		r.json(t, &got)
		if got.GS != "Grupa 2" || got.GO != "own" || got.AE != "0" || got.VE != "0" || got.AT != "" || len(got.TS) != 19 {
			t.Fatalf("group = %+v", got)
		}
		slices.SortFunc(got.GM, func(a, b struct {
			L, DN, S, TS string
			A            bool
		}) int {
			return strings.Compare(b.L, a.L)
		})
		if len(got.GM) != 2 || got.GM[0].L != "own" || !got.GM[0].A || got.GM[0].S != "j" || got.GM[0].DN != "48502159212" ||
			got.GM[1].L != "mem" || got.GM[1].A || got.GM[1].S != "w" || got.GM[1].DN != "48600316058" {
			t.Fatalf("gm = %+v", got.GM)
		}
		if len(got.GG) != 1 || got.GG[0].L != "48500103102" || got.GG[0].TS == "" {
			t.Fatalf("gg = %+v", got.GG)
		}
		// "a" is a JSON boolean, "ae" and "ve" strings, as in the specification.
		for _, frag := range []string{`"a":true`, `"a":false`, `"ae":"0"`, `"ve":"0"`} {
			if !strings.Contains(string(r.body), frag) {
				t.Errorf("getGroup body lacks %s: %s", frag, r.body)
			}
		}
	})
}

func TestDownloads(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		id := setupPair(t, s)
		img := jpegOf(t, 32, 32)
		if r := s.upload("own", "pw-own", map[string]any{"id": id}, "whatever", "a.jpg", img); r.status != 200 {
			t.Fatal(r)
		}
		var at struct{ AT string }
		s.upload("own", "pw-own", map[string]any{"id": id, "t": "video"}, "file", "v.mp4", mp4Header).json(t, &at)
		if len(at.AT) != 19 {
			t.Fatalf("upload answer %+v", at)
		}
		r := s.call("mem", "pw-mem", "downloadAvatar", map[string]any{"id": id, "t": "image"})
		if r.status != 200 || !bytes.Equal(r.body, img) || r.header.Get("ETag") == "" {
			t.Fatalf("download: %d, %d bytes, %v", r.status, len(r.body), r.header)
		}
		// Range and conditional requests.
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/groupchat/%d/video", s.base, id), nil)
		req.SetBasicAuth("mem", "pw-mem")
		req.Header.Set("Range", "bytes=4-7")
		if rr := s.do(req); rr.status != http.StatusPartialContent || string(rr.body) != "ftyp" || rr.header.Get("Content-Type") != "video/mp4" {
			t.Fatalf("range: %s %v", rr, rr.header)
		}
		req, _ = http.NewRequest(http.MethodGet, fmt.Sprintf("%s/groupchat/%d/video", s.base, id), nil)
		req.SetBasicAuth("mem", "pw-mem")
		etag := s.do(req).header.Get("ETag")
		req.Header.Set("If-None-Match", etag)
		if rr := s.do(req); rr.status != http.StatusNotModified {
			t.Fatalf("If-None-Match: %s", rr)
		}
		// No thumbnail yet, no such group, bad id, not a member: all 404.
		for _, c := range []struct{ path, login string }{
			{fmt.Sprintf("/groupchat/%d/video-thumb", id), "mem"},
			{"/groupchat/999999/video", "mem"},
			{"/groupchat/abc/video", "mem"},
			{"/groupchat/99999999999/video", "mem"},
			{fmt.Sprintf("/groupchat/%d/video", id), "non"},
		} {
			if rr := s.get(c.path, c.login, "pw-"+c.login, nil); rr.status != 404 {
				t.Errorf("%s as %s: %s, want 404", c.path, c.login, rr)
			}
		}
		// After delAvatar the avatar is gone and ae is "0".
		s.must("own", "delAvatar", map[string]any{"id": id})
		if r := s.call("mem", "pw-mem", "downloadAvatar", map[string]any{"id": id}); r.status != 404 {
			t.Fatalf("deleted avatar: %s", r)
		}
	})
}

// 50 concurrent sendMessage calls on one group all succeed with distinct,
// increasing MIDs and nothing lost.
func TestConcurrentSendMessage(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		const n = 50
		mids := make([]uint64, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				from := []string{"own", "mem"}[i%2]
				r := s.call(from, "pw-"+from, "sendMessage", map[string]any{"id": id, "mb": fmt.Sprintf("msg %d", i)})
				if r.status != 200 {
					t.Errorf("send %d: %s", i, r)
					return
				}
				fmt.Sscan(r.header.Get("X-GC-MID"), &mids[i])
			}(i)
		}
		wg.Wait()
		sorted := slices.Clone(mids)
		slices.Sort(sorted)
		if len(slices.Compact(sorted)) != n || sorted[0] == 0 {
			t.Fatalf("MIDs not distinct: %v", mids)
		}
		var hist struct {
			M []struct {
				MID uint64
				K   string
				MB  string
			}
			More bool
		}
		s.must("mem", "getMessages", map[string]any{"id": id, "limit": 200}).json(t, &hist)
		var got []uint64
		texts := map[string]bool{}
		for _, m := range hist.M {
			if m.K == "MSG" {
				got = append(got, m.MID)
				texts[m.MB] = true
			}
		}
		if !slices.Equal(got, sorted) || len(texts) != n {
			t.Fatalf("history MIDs %v, want %v", got, sorted)
		}
	})
}
