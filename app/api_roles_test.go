package app

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net/http"
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
)

// The roles a caller can have towards a group, and the login playing each.
var roles = []struct{ name, login string }{
	{"owner", "own"},
	{"admin", "adm"},
	{"joined", "mem"},
	{"waiting", "wai"},
	{"left", "lef"},
	{"nonmember", "non"},
	{"guest", "gst"}, // in the group, but without an account: cannot authenticate
}

func jpegOf(t testing.TB, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := 0; x < w; x++ {
		for y := 0; y < h; y++ {
			img.Set(x, y, color.RGBA{R: uint8(x * y), G: uint8(x), B: uint8(y), A: 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

var mp4Header = append([]byte("\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"), make([]byte, 256)...)

// fixture is a group in which every role is played, with a message from the
// owner, an avatar, a video and its thumbnail.
type fixture struct {
	id  uint32
	mid uint64
}

func newFixture(t testing.TB, s *server) fixture {
	t.Helper()
	var created struct{ ID uint32 }
	s.must("own", "addGroup", map[string]any{"gs": "roles", "dn": "Owner", "gm": []map[string]string{
		{"l": "adm"}, {"l": "mem"}, {"l": "wai"}, {"l": "lef"}, {"l": "wai2"}, {"l": "gst"},
	}}).json(t, &created)
	id := created.ID
	for _, l := range []string{"adm", "mem", "lef"} {
		s.must(l, "joinGroup", map[string]any{"id": id})
	}
	s.must("own", "addAdmin", map[string]any{"id": id, "gm": []string{"adm"}})
	s.must("lef", "leaveGroup", map[string]any{"id": id})
	r := s.must("own", "sendMessage", map[string]any{"id": id, "mb": "hello"})
	var mid uint64
	fmt.Sscan(r.header.Get("X-GC-MID"), &mid)
	if mid == 0 {
		t.Fatalf("sendMessage gave no X-GC-MID: %v", r.header)
	}
	for _, up := range []struct {
		t    string
		data []byte
	}{{"image", jpegOf(t, 16, 16)}, {"video", mp4Header}, {"video-thumbnail", jpegOf(t, 8, 8)}} {
		if r := s.upload("own", "pw-own", map[string]any{"id": id, "t": up.t}, "file", "x.bin", up.data); r.status != 200 {
			t.Fatalf("upload %s: %s", up.t, r)
		}
	}
	return fixture{id: id, mid: mid}
}

func TestEveryMethodAgainstEveryRole(t *testing.T) {
	type row struct {
		gm      string
		pm      func(f fixture) any
		changes bool  // needs a fresh group per role
		want    []int // by role, in the order of roles
	}
	id := func(f fixture) any { return map[string]any{"id": f.id} }
	idMid := func(f fixture) any { return map[string]any{"id": f.id, "mid": f.mid} }
	idGM := func(gm any) func(f fixture) any {
		return func(f fixture) any { return map[string]any{"id": f.id, "gm": gm} }
	}
	rows := []row{
		{"addGroup", func(fixture) any { return map[string]any{"gs": "new", "gm": []map[string]string{{"l": "mem"}}} }, false, []int{200, 200, 200, 200, 200, 200, 401}},
		{"getGroup", id, false, []int{200, 200, 200, 200, 444, 444, 401}},
		{"getCommonGroups", func(fixture) any { return map[string]any{"l": "mem"} }, false, []int{200, 200, 200, 200, 200, 200, 401}},
		{"getMyGroups", func(fixture) any { return map[string]any{} }, false, []int{200, 200, 200, 200, 200, 200, 401}},
		{"delGroup", id, true, []int{200, 444, 444, 444, 444, 444, 401}},
		{"setGroupSubject", func(f fixture) any { return map[string]any{"id": f.id, "gs": "renamed"} }, true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"editGroup", func(f fixture) any { return map[string]any{"id": f.id, "gs": "edited"} }, true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"joinGroup", id, true, []int{200, 200, 200, 200, 444, 444, 401}},
		{"leaveGroup", id, true, []int{200, 200, 200, 200, 444, 444, 401}},
		{"sendMessage", func(f fixture) any { return map[string]any{"id": f.id, "mb": "hi"} }, true, []int{200, 200, 200, 457, 457, 444, 401}},
		{"confMessage", idMid, true, []int{200, 200, 200, 457, 457, 444, 401}},
		{"readMessage", idMid, true, []int{200, 200, 200, 457, 457, 444, 401}},
		{"readUpTo", idMid, true, []int{200, 200, 200, 457, 457, 444, 401}},
		{"delMessage", idMid, true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"getMessageInfo", idMid, false, []int{200, 200, 200, 444, 444, 444, 401}},
		{"getMessages", id, false, []int{200, 200, 200, 444, 444, 444, 401}},
		{"addMember", idGM([]map[string]string{{"l": "non2"}}), true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"delMember", idGM([]string{"wai2"}), true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"addAdmin", idGM([]string{"mem"}), true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"delAdmin", idGM([]string{"adm"}), true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"uploadAvatar", id, true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"downloadAvatar", func(f fixture) any { return map[string]any{"id": f.id, "t": "image"} }, false, []int{200, 200, 200, 200, 404, 404, 401}},
		{"delAvatar", id, true, []int{200, 200, 444, 444, 444, 444, 401}},
		{"GET /groupchat/{id}/video", nil, false, []int{200, 200, 200, 200, 404, 404, 401}},
		{"GET /groupchat/{id}/video-thumb", nil, false, []int{200, 200, 200, 200, 404, 404, 401}},
	}
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		// One group per method and role, all created by own, who invites
		// the same logins (offline) to each: beyond both quotas.
		cfg.Chat.MaxGroupsPerHour = 0
		cfg.Chat.MaxPendingPerSender = 0
		s := start(t, cfg)
		for _, r := range roles {
			if r.name != "guest" {
				s.addAccount(r.login, "pw-"+r.login, r.name)
			}
		}
		s.addAccount("wai2", "pw-wai2", "")
		s.addAccount("non2", "pw-non2", "")
		shared := newFixture(t, s)
		for _, tt := range rows {
			t.Run(tt.gm, func(t *testing.T) {
				for i, role := range roles {
					f := shared
					if tt.changes {
						f = newFixture(t, s)
					}
					var got reply
					switch tt.gm {
					case "uploadAvatar":
						got = s.upload(role.login, "pw-"+role.login, tt.pm(f), "avatar", "a.jpg", jpegOf(t, 4, 4))
					case "GET /groupchat/{id}/video", "GET /groupchat/{id}/video-thumb":
						path := fmt.Sprintf("/groupchat/%d/video", f.id)
						if tt.gm == "GET /groupchat/{id}/video-thumb" {
							path += "-thumb"
						}
						got = s.get(path, role.login, "pw-"+role.login, nil)
					default:
						got = s.call(role.login, "pw-"+role.login, tt.gm, tt.pm(f))
					}
					if got.status != tt.want[i] {
						t.Errorf("%s as %s: %s, want %d", tt.gm, role.name, got, tt.want[i])
					}
					if got.status == http.StatusOK && tt.gm == "downloadAvatar" && got.header.Get("Content-Type") != "image/jpeg" {
						t.Errorf("downloadAvatar as %s: Content-Type %q", role.name, got.header.Get("Content-Type"))
					}
				}
			})
		}
	})
}

// A dn naming someone else grants nothing: identity is the basic-auth login.
func TestDisplayNameGrantsNothing(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		for _, l := range []string{"own", "mem"} {
			s.addAccount(l, "pw-"+l, l)
		}
		var g struct{ ID uint32 }
		s.must("own", "addGroup", map[string]any{"gs": "g", "dn": "own", "gm": []map[string]string{{"l": "mem"}}}).json(t, &g)
		s.must("mem", "joinGroup", map[string]any{"id": g.ID})
		for _, gm := range []string{"delGroup", "setGroupSubject", "addAdmin"} {
			pm := map[string]any{"id": g.ID, "dn": "own", "gs": "hijack", "gm": []string{"mem"}}
			if r := s.call("mem", "pw-mem", gm, pm); r.status != 444 {
				t.Errorf("%s by mem claiming dn=own: %s, want 444", gm, r)
			}
		}
		// A wrong password or an unknown login gets 401 with a challenge.
		for _, cred := range [][2]string{{"own", "wrong"}, {"nobody", "pw"}, {"", ""}} {
			r := s.call(cred[0], cred[1], "getGroup", map[string]any{"id": g.ID})
			if r.status != 401 || r.header.Get("WWW-Authenticate") != `Basic realm="test.local", charset="UTF-8"` {
				t.Errorf("credentials %q: %s %v", cred, r, r.header)
			}
		}
	})
}
