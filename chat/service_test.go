package chat_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"gchd/chat"
	"gchd/httpapi"
	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

// recorder is a Publisher that remembers what was published.
type recorder struct {
	mu     sync.Mutex
	events []published
}

type published struct {
	ev         chat.Event
	recipients []string
}

func (r *recorder) Publish(ev chat.Event, recipients []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := slices.Clone(recipients)
	sort.Strings(rs)
	r.events = append(r.events, published{ev, rs})
}

func (r *recorder) take() []published {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.events
	r.events = nil
	return out
}

type env struct {
	db  *storage.DB
	svc *chat.Service
	pub *recorder
}

// eachEngine runs fn against a real database of every engine, with accounts
// for the logins a..f (and none for guests).
func eachEngine(t *testing.T, fn func(t *testing.T, e env)) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		t.Parallel()
		db := testkit.Open(t, engine)
		accounts := registrar.NewAccounts(db.AccountStore(), "test")
		for _, l := range []string{"a", "b", "c", "d", "e", "f"} {
			if err := accounts.Add(context.Background(), l, "pw", strings.ToUpper(l)); err != nil {
				t.Fatal(err)
			}
		}
		pub := &recorder{}
		fn(t, env{db: db, svc: chat.NewService(db.ChatStore(), chat.WithPublisher(pub)), pub: pub})
	})
}

func caller(l string) chat.Caller { return chat.Caller{Login: l, DisplayName: strings.ToUpper(l)} }

func invitees(logins ...string) []chat.Invitee {
	out := make([]chat.Invitee, len(logins))
	for i, l := range logins {
		out[i] = chat.Invitee{Login: l, DisplayName: l + "-dn"}
	}
	return out
}

func mustGroup(t *testing.T, e env, owner string, members ...string) chat.GroupID {
	t.Helper()
	id, err := e.svc.AddGroup(context.Background(), caller(owner), "subject", "", invitees(members...))
	if err != nil {
		t.Fatalf("AddGroup: %v", err)
	}
	return id
}

func mustJoin(t *testing.T, e env, id chat.GroupID, logins ...string) {
	t.Helper()
	for _, l := range logins {
		if err := e.svc.Join(context.Background(), caller(l), id, ""); err != nil {
			t.Fatalf("Join %s: %v", l, err)
		}
	}
}

func member(t *testing.T, e env, id chat.GroupID, login string) chat.Member {
	t.Helper()
	ms, err := e.db.ChatStore().Members(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Login == login {
			return m
		}
	}
	t.Fatalf("%s is not in group %d", login, id)
	return chat.Member{}
}

func TestAddGroup(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		id, err := e.svc.AddGroup(ctx, caller("a"), "Grupa", "Ala", []chat.Invitee{
			{Login: "b", DisplayName: "Bob"}, {Login: "+48500100200"}, {Login: "b"}, {Login: "a"},
		})
		if err != nil {
			t.Fatal(err)
		}
		v, err := e.svc.GetGroup(ctx, caller("b"), id)
		if err != nil {
			t.Fatal(err)
		}
		if v.Group.Subject != "Grupa" || v.Group.Owner != "a" || v.Group.HasAvatar() {
			t.Fatalf("group = %+v", v.Group)
		}
		got := map[string]chat.Member{}
		for _, m := range v.Members {
			got[m.Login] = m
		}
		if len(got) != 3 {
			t.Fatalf("members = %+v", v.Members)
		}
		if m := got["a"]; m.Status != chat.StatusJoined || !m.Admin || m.DisplayName != "Ala" {
			t.Fatalf("owner = %+v", m)
		}
		if m := got["b"]; m.Status != chat.StatusWaiting || m.Admin || m.DisplayName != "Bob" {
			t.Fatalf("invitee = %+v", m)
		}
		if m := got["+48500100200"]; !m.Guest() || m.DisplayName != "+48500100200" {
			t.Fatalf("guest = %+v", m)
		}
		pubs := e.pub.take()
		if len(pubs) != 1 || pubs[0].ev.Kind != chat.KindNewGroup || !slices.Equal(pubs[0].recipients, []string{"a", "b"}) {
			t.Fatalf("published = %+v, want NG to a and b (not the guest)", pubs)
		}
		if want := fmt.Sprintf("~[GC M:'NG' GID:%d MID:%d]", id, pubs[0].ev.MID); pubs[0].ev.NotificationText() != want {
			t.Fatalf("notification = %q, want %q", pubs[0].ev.NotificationText(), want)
		}
	})
}

func TestAddGroupRejectsAndWritesNothing(t *testing.T) {
	many := func(n int) []chat.Invitee {
		out := make([]chat.Invitee, n)
		for i := range out {
			out[i] = chat.Invitee{Login: fmt.Sprintf("u%02d", i)}
		}
		return out
	}
	tests := []struct {
		name    string
		subject string
		members []chat.Invitee
		want    int
	}{
		{"30 characters of two bytes each", strings.Repeat("ż", 30), nil, 200},
		{"31 characters", strings.Repeat("ż", 31), nil, 400},
		{"empty subject", "", nil, 400},
		{"blank subject", "   ", nil, 400},
		{"subject with a line break", "a\nb", nil, 400},
		{"invalid UTF-8", "\xff", nil, 400},
		{"30 participants", "s", many(29), 200},
		{"31 participants", "s", many(30), 443},
		{"bad login", "s", []chat.Invitee{{Login: "a b"}}, 400},
		{"group address as login", "s", []chat.Invitee{{Login: "gc-12"}}, 400},
		{"empty login", "s", []chat.Invitee{{Login: ""}}, 400},
	}
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		for _, tt := range tests {
			before, _ := e.svc.MyGroups(ctx, caller("a"))
			_, err := e.svc.AddGroup(ctx, caller("a"), tt.subject, "", tt.members)
			if got := httpapi.Code(err); got != tt.want {
				t.Errorf("%s: code %d (%v), want %d", tt.name, got, err, tt.want)
			}
			after, _ := e.svc.MyGroups(ctx, caller("a"))
			if tt.want != 200 && len(after) != len(before) {
				t.Errorf("%s: a failed AddGroup left a group behind", tt.name)
			}
		}
	})
}

func TestMembershipAndRoles(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		id := mustGroup(t, e, "a", "b", "c", "d")
		mustJoin(t, e, id, "b", "c")
		e.pub.take()

		// Joining twice is a no-op without an event.
		if err := e.svc.Join(ctx, caller("b"), id, ""); err != nil {
			t.Fatal(err)
		}
		if pubs := e.pub.take(); len(pubs) != 0 {
			t.Fatalf("second join published %+v", pubs)
		}
		// The owner leaves: b (joined first) becomes admin and owner.
		if err := e.svc.Leave(ctx, caller("a"), id, ""); err != nil {
			t.Fatal(err)
		}
		if m := member(t, e, id, "b"); !m.Admin {
			t.Fatalf("b after the last admin left = %+v", m)
		}
		g, _ := e.db.ChatStore().Group(ctx, id)
		if g.Owner != "b" {
			t.Fatalf("owner = %q, want b", g.Owner)
		}
		pubs := e.pub.take()
		if len(pubs) != 1 || pubs[0].ev.Kind != chat.KindEditGroup || !slices.Equal(pubs[0].recipients, []string{"b", "c"}) {
			t.Fatalf("leave published %+v, want EG to b, c", pubs)
		}
		// A left member cannot come back by itself, nor act.
		if err := e.svc.Join(ctx, caller("a"), id, ""); httpapi.Code(err) != 444 {
			t.Fatalf("rejoin after leaving: %v", err)
		}
		if _, err := e.svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: "x"}); httpapi.Code(err) != 457 {
			t.Fatalf("left member sends: %v", err)
		}
		// addMember invites a left member again; the invited get NG, the joined EG.
		if err := e.svc.AddMembers(ctx, caller("b"), id, "", invitees("a", "e")); err != nil {
			t.Fatal(err)
		}
		if m := member(t, e, id, "a"); m.Status != chat.StatusWaiting || m.Admin {
			t.Fatalf("re-invited = %+v", m)
		}
		pubs = e.pub.take()
		if len(pubs) != 2 || pubs[0].ev.Kind != chat.KindNewGroup || !slices.Equal(pubs[0].recipients, []string{"a", "e"}) ||
			pubs[1].ev.Kind != chat.KindEditGroup || !slices.Equal(pubs[1].recipients, []string{"b", "c"}) {
			t.Fatalf("addMember published %+v", pubs)
		}
		// Non-admins cannot manage.
		if err := e.svc.AddMembers(ctx, caller("c"), id, "", invitees("f")); httpapi.Code(err) != 444 {
			t.Fatalf("member adds: %v", err)
		}
		if err := e.svc.SetAdmins(ctx, caller("b"), id, "", []string{"c"}, true); err != nil {
			t.Fatal(err)
		}
		if err := e.svc.SetAdmins(ctx, caller("b"), id, "", []string{"d"}, true); httpapi.Code(err) != 444 {
			t.Fatalf("admin rights for a waiting member: %v", err)
		}
		if err := e.svc.SetAdmins(ctx, caller("c"), id, "", []string{"b"}, false); httpapi.Code(err) != 444 {
			t.Fatalf("revoke the owner's rights: %v", err)
		}
		if err := e.svc.RemoveMembers(ctx, caller("c"), id, "", []string{"b"}); httpapi.Code(err) != 444 {
			t.Fatalf("remove the owner: %v", err)
		}
		e.pub.take()
		if err := e.svc.RemoveMembers(ctx, caller("b"), id, "", []string{"c", "d"}); err != nil {
			t.Fatal(err)
		}
		if m := member(t, e, id, "c"); m.Status != chat.StatusLeft || m.Admin {
			t.Fatalf("removed = %+v", m)
		}
		pubs = e.pub.take()
		if len(pubs) != 1 || !slices.Equal(pubs[0].recipients, []string{"b", "c"}) {
			t.Fatalf("delMember published %+v, want EG to b and the removed joined member c", pubs)
		}
		if err := e.svc.RemoveMembers(ctx, caller("b"), id, "", []string{"zz"}); httpapi.Code(err) != 444 {
			t.Fatalf("remove a stranger: %v", err)
		}
		// Only the owner deletes; DG goes to everyone active.
		if err := e.svc.DeleteGroup(ctx, caller("a"), id, ""); httpapi.Code(err) != 444 {
			t.Fatalf("non-owner deletes: %v", err)
		}
		if err := e.svc.DeleteGroup(ctx, caller("b"), id, ""); err != nil {
			t.Fatal(err)
		}
		pubs = e.pub.take()
		if len(pubs) != 1 || pubs[0].ev.Kind != chat.KindDeleteGroup || !slices.Equal(pubs[0].recipients, []string{"a", "b", "e"}) {
			t.Fatalf("delGroup published %+v", pubs)
		}
		if _, err := e.svc.GetGroup(ctx, caller("b"), id); httpapi.Code(err) != 444 {
			t.Fatalf("deleted group: %v", err)
		}
	})
}

func TestParticipantLimitOnAddMember(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		var logins []string
		for i := 0; i < 28; i++ {
			logins = append(logins, fmt.Sprintf("u%02d", i))
		}
		id := mustGroup(t, e, "a", logins...) // 29 participants
		if err := e.svc.AddMembers(ctx, caller("a"), id, "", invitees("b", "c")); httpapi.Code(err) != 443 {
			t.Fatalf("31st participant: %v", err)
		}
		if ms, _ := e.db.ChatStore().Members(ctx, id); len(ms) != 29 {
			t.Fatalf("members after refused add = %d, want 29", len(ms))
		}
		if err := e.svc.AddMembers(ctx, caller("a"), id, "", invitees("b")); err != nil {
			t.Fatalf("30th participant: %v", err)
		}
	})
}

func TestMessagesAndReceipts(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		id := mustGroup(t, e, "a", "b", "c", "+48500")
		mustJoin(t, e, id, "b")
		e.pub.take()

		if _, err := e.svc.SendMessage(ctx, caller("c"), chat.Post{Group: id, Text: "x"}); httpapi.Code(err) != 457 {
			t.Fatalf("waiting member sends: %v", err)
		}
		if _, err := e.svc.SendMessage(ctx, caller("z"), chat.Post{Group: id, Text: "x"}); httpapi.Code(err) != 444 {
			t.Fatalf("stranger sends: %v", err)
		}
		if _, err := e.svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: ""}); httpapi.Code(err) != 400 {
			t.Fatalf("empty message: %v", err)
		}
		text := "zażółć\r\n\"gęślą\" <jaźń>"
		mid, err := e.svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, DisplayName: "Ala", Text: text})
		if err != nil {
			t.Fatal(err)
		}
		pubs := e.pub.take()
		// Due to b only: the sender is no recipient of her own text.
		if len(pubs) != 1 || pubs[0].ev.MID != mid || pubs[0].ev.Body != text || pubs[0].ev.SenderDN != "Ala" ||
			!slices.Equal(pubs[0].recipients, []string{"b"}) {
			t.Fatalf("published %+v", pubs)
		}
		rs, err := e.svc.MessageInfo(ctx, caller("b"), id, mid)
		if err != nil || len(rs) != 1 || rs[0].Login != "b" || !rs[0].Confirmed.IsZero() {
			t.Fatalf("info = %+v, %v", rs, err)
		}
		if err := e.svc.ConfirmMessage(ctx, caller("c"), id, mid); httpapi.Code(err) != 457 {
			t.Fatalf("waiting member confirms: %v", err)
		}
		if err := e.svc.ConfirmMessage(ctx, caller("b"), id, mid+1000); httpapi.Code(err) != 444 {
			t.Fatalf("confirm unknown mid: %v", err)
		}
		if err := e.svc.ReadMessage(ctx, caller("b"), id, mid); err != nil {
			t.Fatal(err)
		}
		rs, _ = e.svc.MessageInfo(ctx, caller("a"), id, mid)
		if rs[0].Confirmed.IsZero() || rs[0].Read.IsZero() {
			t.Fatalf("after read: %+v", rs)
		}
		if _, err := e.svc.MessageInfo(ctx, caller("c"), id, mid); httpapi.Code(err) != 444 {
			t.Fatalf("waiting member reads info: %v", err)
		}
		// b may not delete a's message; a may.
		if err := e.svc.DeleteMessage(ctx, caller("b"), id, mid, ""); httpapi.Code(err) != 444 {
			t.Fatalf("b deletes a's message: %v", err)
		}
		if err := e.svc.DeleteMessage(ctx, caller("a"), id, mid, ""); err != nil {
			t.Fatal(err)
		}
		pubs = e.pub.take()
		if len(pubs) != 1 || pubs[0].ev.Kind != chat.KindDeleteMessage || pubs[0].ev.Ref != mid ||
			pubs[0].ev.NotificationText() != fmt.Sprintf("~[GC M:'DM' GID:%d MID:%d]", id, mid) {
			t.Fatalf("delete published %+v", pubs)
		}
		if err := e.svc.DeleteMessage(ctx, caller("a"), id, mid, ""); httpapi.Code(err) != 444 {
			t.Fatalf("delete twice: %v", err)
		}
		evs, more, err := e.svc.Messages(ctx, caller("b"), id, 0, 0)
		if err != nil || more {
			t.Fatal(err, more)
		}
		var kinds []string
		for _, ev := range evs {
			kinds = append(kinds, string(ev.Kind))
			if ev.MID == mid && (!ev.Deleted || ev.Body != "") {
				t.Fatalf("deleted message in history: %+v", ev)
			}
		}
		if want := []string{"NG", "EG", "MSG", "DM"}; !slices.Equal(kinds, want) {
			t.Fatalf("history kinds = %v, want %v", kinds, want)
		}
		page, more, err := e.svc.Messages(ctx, caller("b"), id, evs[0].MID, 2)
		if err != nil || !more || len(page) != 2 || page[0].MID != evs[1].MID {
			t.Fatalf("page = %+v, more %v, %v", page, more, err)
		}
	})
}

func TestConcurrentSends(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		id := mustGroup(t, e, "a", "b", "c")
		mustJoin(t, e, id, "b", "c")
		const n = 50
		mids := make([]chat.MID, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				from := []string{"a", "b", "c"}[i%3]
				mids[i], errs[i] = e.svc.SendMessage(ctx, caller(from), chat.Post{Group: id, Text: fmt.Sprintf("m%d", i)})
			}(i)
		}
		wg.Wait()
		seen := map[chat.MID]bool{}
		for i, err := range errs {
			if err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
			if seen[mids[i]] {
				t.Fatalf("MID %d given twice", mids[i])
			}
			seen[mids[i]] = true
		}
		evs, _, err := e.svc.Messages(ctx, caller("a"), id, 0, chat.MaxHistoryLimit)
		if err != nil {
			t.Fatal(err)
		}
		var got []chat.MID
		texts := map[string]bool{}
		for _, ev := range evs {
			if ev.Kind == chat.KindMessage {
				got = append(got, ev.MID)
				texts[ev.Body] = true
			}
		}
		if len(got) != n || len(texts) != n || !slices.IsSorted(got) {
			t.Fatalf("history has %d messages (%d distinct), sorted %v", len(got), len(texts), slices.IsSorted(got))
		}
	})
}

func jpegBytes(t *testing.T, w, h int) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := 0; x < w; x++ {
		img.Set(x, x%h, color.RGBA{R: uint8(x), A: 255})
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestMedia(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx := context.Background()
		id := mustGroup(t, e, "a", "b")
		var pngBuf bytes.Buffer
		png.Encode(&pngBuf, image.NewRGBA(image.Rect(0, 0, 4, 4)))
		big := append(jpegBytes(t, 8, 8), make([]byte, 100<<10)...)
		tests := []struct {
			name string
			kind chat.MediaKind
			data []byte
			want int
		}{
			{"png", chat.MediaAvatar, pngBuf.Bytes(), 407},
			{"truncated jpeg", chat.MediaAvatar, jpegBytes(t, 32, 32)[:40], 407},
			{"too large", chat.MediaAvatar, big, 411},
			{"jpeg", chat.MediaAvatar, jpegBytes(t, 32, 32), 200},
			{"jpeg as video", chat.MediaVideo, jpegBytes(t, 8, 8), 407},
			{"mp4", chat.MediaVideo, append([]byte("\x00\x00\x00\x18ftypmp42"), make([]byte, 64)...), 200},
			{"thumbnail", chat.MediaVideoThumb, jpegBytes(t, 8, 8), 200},
		}
		for _, tt := range tests {
			_, err := e.svc.SetMedia(ctx, caller("a"), id, tt.kind, tt.data, "")
			if got := httpapi.Code(err); got != tt.want {
				t.Errorf("%s: code %d (%v), want %d", tt.name, got, err, tt.want)
			}
		}
		if _, err := e.svc.SetMedia(ctx, caller("b"), id, chat.MediaAvatar, jpegBytes(t, 8, 8), ""); httpapi.Code(err) != 444 {
			t.Fatalf("waiting member uploads: %v", err)
		}
		m, err := e.svc.GetMedia(ctx, caller("b"), id, chat.MediaVideo)
		if err != nil || m.ContentType != "video/mp4" {
			t.Fatalf("video = %v, %v", m.ContentType, err)
		}
		if _, err := e.svc.GetMedia(ctx, caller("z"), id, chat.MediaAvatar); !errors.Is(err, chat.ErrNoMedia) {
			t.Fatalf("stranger downloads: %v", err)
		}
		v, _ := e.svc.GetGroup(ctx, caller("a"), id)
		if !v.Group.HasAvatar() || !v.Group.HasVideo() {
			t.Fatalf("group after uploads = %+v", v.Group)
		}
		if _, err := e.svc.DeleteMedia(ctx, caller("a"), id, chat.MediaAvatar, ""); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.GetMedia(ctx, caller("a"), id, chat.MediaAvatar); !errors.Is(err, chat.ErrNoMedia) {
			t.Fatalf("deleted avatar: %v", err)
		}
		if v, _ := e.svc.GetGroup(ctx, caller("a"), id); v.Group.HasAvatar() {
			t.Fatal("ae after delete")
		}
	})
}

func TestValidLogin(t *testing.T) {
	for _, tt := range []struct {
		login string
		ok    bool
	}{
		{"alice", true}, {"+48500100200", true}, {"a.b-c_d~e", true}, {strings.Repeat("x", 64), true},
		{"", false}, {strings.Repeat("x", 65), false}, {"a b", false}, {"a@b", false}, {"a:b", false},
		{"GC-1", false}, {"ąę", false}, {"a\r\nb", false},
	} {
		if got := chat.ValidLogin(tt.login); got != tt.ok {
			t.Errorf("ValidLogin(%q) = %v", tt.login, got)
		}
	}
}
