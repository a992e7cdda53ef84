package app

import (
	"fmt"
	"gchd/internal/testkit"
	"gchd/storage"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
)

// notification is what a phone received, reduced to what a client reads.
type notification struct {
	body string
	gid  string
	mid  uint64
	from string // user part of the From URI
	dn   string // From display name as sent (escaped)
	xf   string // X-GC-From
	ct   string
}

func notificationsOf(reqs []*sip.Request) []notification {
	out := make([]notification, len(reqs))
	for i, r := range reqs {
		n := notification{body: string(r.Body()), from: r.From().Address.User, dn: r.From().DisplayName}
		if h := r.GetHeader("X-GC-GID"); h != nil {
			n.gid = h.Value()
		}
		if h := r.GetHeader("X-GC-MID"); h != nil {
			n.mid, _ = strconv.ParseUint(h.Value(), 10, 64)
		}
		if h := r.GetHeader("X-GC-From"); h != nil {
			n.xf = h.Value()
		}
		if h := r.ContentType(); h != nil {
			n.ct = h.Value()
		}
		out[i] = n
	}
	return out
}

func gcBody(kind string, gid uint32, mid uint64) string {
	return fmt.Sprintf("~[GC M:'%s' GID:%d MID:%d]", kind, gid, mid)
}

// groupOf creates a group through the API and returns its id.
func groupOf(t *testing.T, s *server, owner string, members ...string) uint32 {
	t.Helper()
	gm := make([]map[string]string, len(members))
	for i, m := range members {
		gm[i] = map[string]string{"l": m, "dn": strings.ToUpper(m)}
	}
	var g struct{ ID uint32 }
	s.must(owner, "addGroup", map[string]any{"gs": "Team", "dn": strings.ToUpper(owner), "gm": gm}).json(t, &g)
	return g.ID
}

func sendMID(t *testing.T, s *server, login string, pm map[string]any) uint64 {
	t.Helper()
	r := s.must(login, "sendMessage", pm)
	mid, err := strconv.ParseUint(r.header.Get("X-GC-MID"), 10, 64)
	if err != nil {
		t.Fatalf("X-GC-MID: %v", r.header)
	}
	return mid
}

// The notifications of the specification reach members' phones as SIP
// MESSAGE requests from the group's address.
func TestNotificationsOverSIP(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "ann", "bob"} {
			s.addAccount(l, "pw-"+l, "")
		}
		own, ann, bob := newPhone(t, s, "own", "UDP"), newPhone(t, s, "ann", "TCP"), newPhone(t, s, "bob", "WS")
		for _, p := range []*phone{own, ann, bob} {
			p.register()
		}
		id := groupOf(t, s, "own", "ann", "bob")

		// NG to every participant, the invited included.
		for _, p := range []*phone{own, ann, bob} {
			n := notificationsOf(p.waitFor(1))[0]
			if n.body != gcBody("NG", id, n.mid) || n.from != fmt.Sprintf("gc-%d", id) || n.gid != fmt.Sprint(id) ||
				!strings.HasPrefix(n.ct, "text/plain") {
				t.Fatalf("%s: NG = %+v", p.login, n)
			}
		}
		// ann joins: EG to the joined members (own and ann), not to bob.
		s.must("ann", "joinGroup", map[string]any{"id": id})
		for _, p := range []*phone{own, ann} {
			if n := notificationsOf(p.waitFor(2))[1]; n.body != gcBody("EG", id, n.mid) {
				t.Fatalf("%s: after join %+v", p.login, n)
			}
		}
		// A message, then its deletion: DM names the deleted message.
		mid := sendMID(t, s, "ann", map[string]any{"id": id, "mb": "oops", "dn": "Ann"})
		s.must("ann", "delMessage", map[string]any{"id": id, "mid": mid})
		// own gets NG, EG, the message and DM; ann, who sent it, all but it.
		for p, n := range map[*phone]int{own: 4, ann: 3} {
			got := notificationsOf(p.waitFor(n))
			last := got[len(got)-1]
			if last.body != gcBody("DM", id, mid) || last.mid <= mid {
				t.Fatalf("%s: DM = %+v (deleted %d)", p.login, last, mid)
			}
		}
		// The owner deletes the group: DG to everyone active, bob included.
		s.must("own", "delGroup", map[string]any{"id": id})
		for _, p := range []*phone{own, ann, bob} {
			deadline := time.Now().Add(10 * time.Second)
			for {
				got := notificationsOf(p.received())
				if len(got) > 0 && strings.HasPrefix(got[len(got)-1].body, "~[GC M:'DG' GID:"+fmt.Sprint(id)) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s got no DG: %v", p.login, got)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		if got := bodies(bob.received()); len(got) != 2 {
			t.Fatalf("bob (never joined) received %v, want NG and DG only", got)
		}
	})
}

// Group text reaches every joined member but the sender, byte-exact, from
// the group's address with the sender's display name; it is confirmed (cf)
// by the first 2xx.
func TestGroupTextOverSIP(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "ann", "bob"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "ann", "bob")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		own, ownDesk, ann, bob := newPhone(t, s, "own", "UDP"), newPhone(t, s, "own", "TCP"), newPhone(t, s, "ann", "WS"), newPhone(t, s, "bob", "UDP")
		for _, p := range []*phone{own, ownDesk, ann, bob} {
			p.register()
		}
		// Pending notifications arrive on registration; wait for them.
		ann.waitFor(2)
		text := "Zażółć gęślą jaźń \"quoted\" \\ <b>&amp;</b>\r\nline two 🎉"
		mid := sendMID(t, s, "ann", map[string]any{"id": id, "mb": text, "dn": "Ann Smith"})
		for _, p := range []*phone{own, ownDesk} {
			var got notification
			deadline := time.Now().Add(10 * time.Second)
			for got.mid != mid {
				for _, n := range notificationsOf(p.received()) {
					if n.mid == mid {
						got = n
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s/%s never got message %d", p.login, p.transport, mid)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if got.body != text || got.dn != "Ann Smith" || got.from != fmt.Sprintf("gc-%d", id) || got.xf != "ann" || got.gid != fmt.Sprint(id) {
				t.Fatalf("%s/%s: %+v", p.login, p.transport, got)
			}
		}
		// bob has not joined: no text for him; ann sent it: none for her
		// either (copies to her devices are off by default).
		time.Sleep(200 * time.Millisecond)
		for _, p := range []*phone{bob, ann} {
			for _, n := range notificationsOf(p.received()) {
				if n.mid == mid {
					t.Fatalf("%s received the group text", p.login)
				}
			}
		}
		// The phones' 200s set cf.
		eventually(t, func() bool {
			var info []map[string]string
			s.must("ann", "getMessageInfo", map[string]any{"id": id, "mid": mid}).json(t, &info)
			return len(info) == 1 && info[0]["l"] == "own" && info[0]["cf"] != ""
		})
	})
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A MESSAGE to the group's address from a joined member posts to the
// group like sendMessage; others are refused with nothing posted.
func TestPostingOverSIP(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "ann", "bob", "eve"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "ann", "bob")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		own, ann, bob, eve := newPhone(t, s, "own", "TCP"), newPhone(t, s, "ann", "UDP"), newPhone(t, s, "bob", "UDP"), newPhone(t, s, "eve", "UDP")
		for _, p := range []*phone{own, ann, bob, eve} {
			p.register()
		}
		own.waitFor(2) // NG, EG
		group := fmt.Sprintf("gc-%d", id)

		req := ann.messageRequest(group, "posted from a phone")
		req.ReplaceHeader(&sip.FromHeader{DisplayName: "Ann on the go", Address: sip.Uri{Scheme: "sip", User: "ann", Host: testDomain}, Params: sip.HeaderParams{{K: "tag", V: "t1"}}})
		res := ann.send(req)
		if res.StatusCode != 202 || res.GetHeader("X-GC-MID") == nil {
			t.Fatalf("post: %s", res.StartLine())
		}
		mid, _ := strconv.ParseUint(res.GetHeader("X-GC-MID").Value(), 10, 64)
		got := notificationsOf(own.waitFor(3))[2]
		if got.mid != mid || got.body != "posted from a phone" || got.dn != "Ann on the go" || got.xf != "ann" {
			t.Fatalf("own received %+v", got)
		}
		// Not back to the device it came from.
		time.Sleep(200 * time.Millisecond)
		for _, n := range notificationsOf(ann.received()) {
			if n.mid == mid {
				t.Fatal("the posting device received its own message")
			}
		}
		before := s.rowCounts()
		if res := eve.message(group, "intruder"); res.StatusCode != 404 {
			t.Errorf("non-member: %s", res.StartLine())
		}
		if res := bob.message(group, "not joined yet"); res.StatusCode != 403 {
			t.Errorf("waiting member: %s", res.StartLine())
		}
		if res := eve.message("gc-999999", "no such group"); res.StatusCode != 404 {
			t.Errorf("no such group: %s", res.StartLine())
		}
		req = ann.messageRequest(group, "<b>html</b>")
		req.ReplaceHeader(sip.NewHeader("Content-Type", "text/html"))
		if res := ann.send(req); res.StatusCode != 415 {
			t.Errorf("text/html: %s", res.StartLine())
		}
		// A delivery of ours forwarded back (it carries X-GC-MID) is refused.
		if res := ann.message(group, "echo", sip.NewHeader("X-GC-MID", "1")); res.StatusCode != 403 {
			t.Errorf("bounced delivery: %s", res.StartLine())
		}
		if res := ann.message(group, gcBody("EG", id, 1)); res.StatusCode != 403 {
			t.Errorf("notification text: %s", res.StartLine())
		}
		if after := s.rowCounts(); after["events"] != before["events"] {
			t.Errorf("refused posts changed the log: %v -> %v", before, after)
		}
	})
}

// A plain phone takes part with commands in the message body.
func TestCommandsOverSIP(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "bob"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "bob")
		bob := newPhone(t, s, "bob", "UDP")
		bob.register()
		bob.waitFor(1) // NG
		group := fmt.Sprintf("gc-%d", id)
		steps := []struct {
			cmd, answer string
		}{
			{"#help", "Commands:"},
			{"#members", "OWN (own) joined, admin, owner"},
			{"#subject New name", "Only the group's admins"},
			{"#join", "You joined the group."},
			{"#members", "BOB (bob) joined"},
			{"#leave", "You left the group."},
			{"#join", "You are not a member"},
		}
		n := 1
		for _, st := range steps {
			if res := bob.message(group, st.cmd); res.StatusCode != 200 {
				t.Fatalf("%s: %s", st.cmd, res.StartLine())
			}
			n++
			got := bodies(bob.waitFor(n))
			var answer string
			// Answers and EG notifications may interleave; find the answer.
			deadline := time.Now().Add(5 * time.Second)
			for answer == "" {
				for _, b := range got[1:] {
					if !strings.HasPrefix(b, "~[GC") && strings.Contains(b, st.answer) {
						answer = b
					}
				}
				if answer == "" {
					if time.Now().After(deadline) {
						t.Fatalf("%s: no answer containing %q in %q", st.cmd, st.answer, got)
					}
					time.Sleep(20 * time.Millisecond)
					got = bodies(bob.received())
				}
			}
			n = len(got)
		}
		// "#hashtag" is a message, not a command: it is posted (as a left
		// member, refused).
		if res := bob.message(group, "#hashtag party"); res.StatusCode != 403 {
			t.Fatalf("#hashtag: %s", res.StartLine())
		}
	})
}

// Members offline when events happen get them, in MID order, when they
// register; a member with two devices gets them on both.
func TestOfflineMembersCatchUp(t *testing.T) {
	// With a window, several deliveries are in flight to the member at
	// once. They leave in MID order, but a receiver that handles requests
	// concurrently (as this sipgo phone does) may see them in another:
	// then only completeness is checked, and X-GC-MID gives the order.
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		for _, window := range []int{1, 4} {
			t.Run(fmt.Sprintf("window %d", window), func(t *testing.T) {
				testOfflineMembersCatchUp(t, engine, window)
			})
		}
	})
}

func testOfflineMembersCatchUp(t *testing.T, engine storage.Engine, window int) {
	s := startSIPOn(t, engine, func(c *configs.Config) { c.Delivery.Window = window })
	for _, l := range []string{"own", "ann"} {
		s.addAccount(l, "pw-"+l, "")
	}
	id := groupOf(t, s, "own", "ann")
	s.must("ann", "joinGroup", map[string]any{"id": id})
	var mids []uint64
	for i := 0; i < 10; i++ {
		mids = append(mids, sendMID(t, s, "own", map[string]any{"id": id, "mb": fmt.Sprintf("m%d", i)}))
	}
	phoneA, phoneB := newPhone(t, s, "ann", "UDP"), newPhone(t, s, "ann", "TCP")
	phoneA.register()
	got := notificationsOf(phoneA.waitFor(12))
	var order []uint64
	for _, n := range got {
		order = append(order, n.mid)
	}
	if window == 1 && (!slices.IsSorted(order) || got[0].body != gcBody("NG", id, got[0].mid)) {
		t.Fatalf("backlog order %v (%q)", order, got[0].body)
	}
	if sorted := slices.Sorted(slices.Values(order)); len(slices.Compact(sorted)) != len(order) {
		t.Fatalf("backlog %v holds a delivery twice", order)
	}
	for i, m := range mids {
		if !slices.Contains(order, m) {
			t.Fatalf("message %d (MID %d) missing from %v", i, m, order)
		}
	}
	// Once delivered (cf set), they are not sent again to a new device.
	phoneB.register()
	mid := sendMID(t, s, "own", map[string]any{"id": id, "mb": "to both devices"})
	for _, p := range []*phone{phoneA, phoneB} {
		eventually(t, func() bool {
			for _, n := range notificationsOf(p.received()) {
				if n.mid == mid {
					return true
				}
			}
			return false
		})
	}
}

// Display names cannot inject SIP headers: quotes and backslashes are
// escaped, and what the receiver parses is the group's address with the
// name as given.
func TestHostileDisplayNames(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "ann"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "ann")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		own := newPhone(t, s, "own", "TCP")
		own.register()
		own.waitFor(2)
		hostile := []string{
			`Mallory" <sip:evil@example.com>;tag=x`,
			`back\slash \" quote`,
			`"`,
			`\`,
			`a<b>c,d;e=f`,
		}
		for i, dn := range hostile {
			mid := sendMID(t, s, "ann", map[string]any{"id": id, "mb": fmt.Sprint(i), "dn": dn})
			var got notification
			eventually(t, func() bool {
				for _, n := range notificationsOf(own.received()) {
					if n.mid == mid {
						got = n
						return true
					}
				}
				return false
			})
			unescaped := strings.NewReplacer(`\"`, `"`, `\\`, `\`).Replace(got.dn)
			if got.from != fmt.Sprintf("gc-%d", id) || unescaped != dn || got.body != fmt.Sprint(i) {
				t.Errorf("dn %q arrived as From %q <%s>", dn, got.dn, got.from)
			}
		}
		// Line breaks never get that far: the API refuses them.
		if r := s.call("ann", "pw-ann", "sendMessage", map[string]any{"id": id, "mb": "x", "dn": "a\r\nX-Evil: 1"}); r.status != 400 {
			t.Fatalf("dn with CRLF: %s", r)
		}
	})
}

// A 30-member group with members on UDP, TCP and WebSocket: every message
// reaches every other member's phone, in order.
func TestThirtyMemberGroup(t *testing.T) {
	s := startSIP(t)
	var logins []string
	for i := 0; i < 30; i++ {
		l := fmt.Sprintf("m%02d", i)
		logins = append(logins, l)
		s.addAccount(l, "pw-"+l, "")
	}
	id := groupOf(t, s, logins[0], logins[1:]...)
	phones := make([]*phone, 30)
	for i, l := range logins {
		if i > 0 {
			s.must(l, "joinGroup", map[string]any{"id": id})
		}
		phones[i] = newPhone(t, s, l, []string{"UDP", "TCP", "WS"}[i%3])
		phones[i].register()
	}
	var mids []uint64
	senders := map[uint64]string{}
	for i := 0; i < 5; i++ {
		from := logins[i*7%30]
		mid := sendMID(t, s, from, map[string]any{"id": id, "mb": fmt.Sprintf("round %d", i)})
		mids = append(mids, mid)
		senders[mid] = from
	}
	for _, p := range phones {
		// Every message but the phone's own.
		var want []uint64
		for _, mid := range mids {
			if senders[mid] != p.login {
				want = append(want, mid)
			}
		}
		eventually(t, func() bool {
			var got []uint64
			for _, n := range notificationsOf(p.received()) {
				if slices.Contains(mids, n.mid) {
					got = append(got, n.mid)
				}
			}
			return slices.Equal(got, want)
		})
	}
}
