package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/storage"
)

const composingType = "application/im-iscomposing+xml"

// composingDoc is an RFC 3994 document as Linphone sends one.
func composingDoc(state string) string {
	return `<?xml version="1.0" encoding="UTF-8"?>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <state>` + state + `</state>
  <contenttype>text/plain</contenttype>
  <refresh>60</refresh>
</isComposing>`
}

// composing sends a typing notice from a phone, with a display name.
func composing(p *phone, to, body string) *sip.Response {
	p.t.Helper()
	req := p.messageRequest(to, body)
	req.ReplaceHeader(&sip.FromHeader{DisplayName: "Ann Typing", Address: sip.Uri{Scheme: "sip", User: p.login, Host: testDomain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.ReplaceHeader(sip.NewHeader("Content-Type", composingType))
	return p.send(req)
}

// typingOf returns the typing notices among what a phone received.
func typingOf(reqs []*sip.Request) []*sip.Request {
	var out []*sip.Request
	for _, r := range reqs {
		if ct := r.ContentType(); ct != nil && strings.HasPrefix(ct.Value(), composingType) {
			out = append(out, r)
		}
	}
	return out
}

// waitTyping waits until p has received n typing notices.
func waitTyping(t *testing.T, p *phone, n int) []*sip.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := typingOf(p.received()); len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s received %d typing notices, want %d", p.login, p.transport, len(typingOf(p.received())), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A joined member's typing notice to the group's address is answered 200
// and reaches the other joined members' devices registered now, from the
// group's address with her display name and X-GC-From, without a MID. It
// is not stored: nothing is written, and a member who registers later
// gets none. Others get what a post gets (403, 404); bad documents 400 or
// 413; a flood 503.
func TestTypingInGroups(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		for _, l := range []string{"own", "ann", "bob", "cat", "wai", "out"} {
			s.addAccount(l, "pw-"+l, "")
		}
		ann, annDesk, bob, wai, out := newPhone(t, s, "ann", "UDP"), newPhone(t, s, "ann", "TCP"), newPhone(t, s, "bob", "TCP"),
			newPhone(t, s, "wai", "UDP"), newPhone(t, s, "out", "UDP")
		own := newGosipPhone(t, "own", "udp")
		for _, p := range []*phone{ann, annDesk, bob, wai, out} {
			p.register()
		}
		if res := own.request(t, "REGISTER", s.app.SIPAddr("UDP"), "", ""); res.StatusCode() != 200 {
			t.Fatalf("REGISTER gosip: %s", res.StartLine())
		}
		id := groupOf(t, s, "own", "ann", "bob", "cat", "wai")
		for _, l := range []string{"ann", "bob", "cat"} {
			s.must(l, "joinGroup", map[string]any{"id": id})
		}
		group := fmt.Sprintf("gc-%d", id)
		before := s.rowCounts()

		res := composing(ann, group, composingDoc("active"))
		if res.StatusCode != 200 || res.GetHeader("X-GC-MID") != nil {
			t.Fatalf("typing notice: %s", res)
		}
		got := waitTyping(t, bob, 1)[0]
		n := notificationsOf([]*sip.Request{got})[0]
		if n.from != group || n.dn != "Ann Typing" || n.xf != "ann" || n.gid != fmt.Sprint(id) || got.GetHeader("X-GC-MID") != nil ||
			got.To().Address.User != "bob" || !strings.Contains(n.body, "<state>active</state>") || !strings.Contains(n.body, "<refresh>60</refresh>") {
			t.Fatalf("bob received:\n%s", got)
		}
		waitBody(t, own, n.body) // the gosip phone got the same document
		if after := s.rowCounts(); after["events"] != before["events"] || after["deliveries"] != before["deliveries"] {
			t.Errorf("a typing notice was written: %v -> %v", before, after)
		}

		res = composing(ann, group, composingDoc("idle"))
		if res.StatusCode != 200 {
			t.Fatalf("idle notice: %s", res.StartLine())
		}
		if got := waitTyping(t, bob, 2)[1]; !strings.Contains(string(got.Body()), "<state>idle</state>") {
			t.Fatalf("bob received:\n%s", got)
		}

		// Not to the sender's other devices, nor to a member who has not
		// joined.
		time.Sleep(300 * time.Millisecond)
		for _, p := range []*phone{annDesk, wai, out} {
			if got := typingOf(p.received()); len(got) != 0 {
				t.Errorf("%s/%s received a typing notice:\n%s", p.login, p.transport, got[0])
			}
		}

		// cat was offline: registering now brings her what waits for
		// her (NG, EG), and no typing notice.
		cat := newPhone(t, s, "cat", "UDP")
		cat.register()
		cat.waitFor(1)
		time.Sleep(300 * time.Millisecond)
		if got := typingOf(cat.received()); len(got) != 0 {
			t.Errorf("cat received a typing notice stored for her:\n%s", got[0])
		}
		if got := len(typingOf(bob.received())); got != 2 {
			t.Errorf("bob received %d typing notices, want 2", got)
		}

		for _, c := range []struct {
			name string
			p    *phone
			to   string
			body string
			want int
		}{
			{"non-member", out, group, composingDoc("active"), 404},
			{"waiting member", wai, group, composingDoc("active"), 403},
			{"no such group", ann, "gc-999999", composingDoc("active"), 404},
			{"not XML", ann, group, "typing...", 400},
			{"no state", ann, group, `<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"/>`, 400},
			{"unknown state", ann, group, strings.Replace(composingDoc("active"), "active", "shouting", 1), 400},
			{"other namespace", ann, group, `<isComposing xmlns="urn:example"><state>active</state></isComposing>`, 400},
			{"bad refresh", ann, group, strings.Replace(composingDoc("active"), ">60<", ">-1<", 1), 400},
			{"too large", ann, group, strings.Replace(composingDoc("active"), "<refresh>", strings.Repeat(" ", 5000)+"<refresh>", 1), 413},
		} {
			if res := composing(c.p, c.to, c.body); res.StatusCode != c.want {
				t.Errorf("%s: %s, want %d", c.name, res.StartLine(), c.want)
			}
		}
		time.Sleep(300 * time.Millisecond)
		if got := len(typingOf(bob.received())); got != 2 {
			t.Errorf("refused notices were relayed: bob has %d", got)
		}

		// A flood is cut off: one member's notices to one group are
		// rate limited, the refused ones answered 503 with Retry-After.
		ok, limited := 0, 0
		for i := 0; i < 20; i++ {
			res := composing(ann, group, composingDoc("active"))
			switch {
			case res.StatusCode == 200:
				ok++
			case res.StatusCode == 503 && res.GetHeader("Retry-After") != nil:
				limited++
			default:
				t.Fatalf("notice %d: %s", i, res.StartLine())
			}
		}
		t.Logf("20 notices at once: %d relayed, %d answered 503", ok, limited)
		if limited == 0 || ok > 10 {
			t.Errorf("20 notices at once: %d relayed, %d limited", ok, limited)
		}
		waitTyping(t, bob, 2+ok)
		time.Sleep(200 * time.Millisecond)
		if got := len(typingOf(bob.received())); got != 2+ok {
			t.Errorf("bob has %d typing notices, want %d", got, 2+ok)
		}
		if got := value(t, s, "gchd_limits_rejections_total", map[string]string{"limit": "sip_typing"}); got != float64(limited) {
			t.Errorf("rejections{sip_typing} = %v, want %d", got, limited)
		}
	})
}

// SIPp, a third-party user agent, sends an isComposing MESSAGE to the
// group's address with digest auth; it is answered 200 and a member's
// phone gets it.
func TestSIPpTyping(t *testing.T) {
	sipp := sippPath(t)
	s := startSIP(t)
	s.addAccount("user00001", "pass00001", "")
	s.addAccount("bob", "pw-bob", "")
	dir := t.TempDir()
	usersCSV := filepath.Join(dir, "users.csv")
	os.WriteFile(usersCSV, []byte("SEQUENTIAL\nuser00001;pass00001;[authentication username=user00001 password=pass00001]\n"), 0o600)
	bob := newPhone(t, s, "bob", "UDP")
	bob.register()
	id := groupOf(t, s, "bob", "user00001")
	s.call("user00001", "pass00001", "joinGroup", map[string]any{"id": id})
	before := s.rowCounts()
	runSIPp(t, sipp, s.app.SIPAddr("UDP"), "-sf", scenario("iscomposing_auth.xml"), "-inf", usersCSV, "-m", "1",
		"-key", "domain", testDomain, "-key", "to", fmt.Sprintf("gc-%d", id), "-timeout", "30s", "-timeout_error")
	got := waitTyping(t, bob, 1)[0]
	n := notificationsOf([]*sip.Request{got})[0]
	if n.from != fmt.Sprintf("gc-%d", id) || n.xf != "user00001" || n.dn != "SIPp user00001" || !strings.Contains(n.body, "<state>active</state>") {
		t.Fatalf("bob received:\n%s", got)
	}
	if after := s.rowCounts(); after["events"] != before["events"] {
		t.Errorf("the typing notice was stored: %v -> %v", before, after)
	}
}
