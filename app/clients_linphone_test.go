package app

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/internal/testkit/softphone"
	"gchd/storage"
)

// texts keeps the text/plain MESSAGEs (linphonec also sends receipts).
func texts(reqs []*sip.Request) []*sip.Request {
	var out []*sip.Request
	for _, r := range reqs {
		if ct := r.ContentType(); ct == nil || strings.HasPrefix(ct.Value(), "text/plain") {
			out = append(out, r)
		}
	}
	return out
}

// linphonec registers with gchd's default challenge over UDP and TCP, and
// unregisters when it quits.
func TestLinphoneRegister(t *testing.T) {
	softphone.Need(t, "linphonec", "linphone-cli")
	s := startSIP(t)
	s.addAccount("carol", "pw-carol", "Carol")
	for _, tr := range []string{"UDP", "TCP"} {
		t.Run(tr, func(t *testing.T) {
			l := startLinphonec(t, s, "carol", tr, false)
			// gchd commits the binding just before linphonec reads the 200.
			for i := 0; ; i++ {
				l.Send("status register")
				if _, err := l.Await(time.Second, "registered, identity=sip:carol@"+testDomain); err == nil {
					break
				}
				if i == 10 {
					t.Fatalf("linphonec never says it is registered:\n%s", l.Output())
				}
			}
			l.Stop()
			waitNoBinding(t, s, "carol")
		})
	}
}

// One-to-one MESSAGE both ways between linphonec and a phone of the
// harness, and a message that waited for linphonec while it was offline.
func TestLinphoneMessages(t *testing.T) {
	softphone.Need(t, "linphonec", "linphone-cli")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("carol", "pw-carol", "Carol")
		s.addAccount("bob", "pw-bob", "Bob")
		bob := newPhone(t, s, "bob", "UDP")
		bob.register()
		if res := bob.message("carol", "while you were away"); res.StatusCode != 202 {
			t.Fatalf("MESSAGE to offline carol: %s", res.StartLine())
		}
		carol := startLinphonec(t, s, "carol", "TCP", false)
		carol.ExpectMessage("bob", "while you were away")
		res := bob.message("carol", "hello carol")
		if res.StatusCode != 200 {
			t.Fatalf("MESSAGE to carol: %s", res.StartLine())
		}
		carol.ExpectMessage("bob", "hello carol")
		// linphonec's delivery notification comes back to bob through
		// gchd, naming bob's MESSAGE by its Call-ID.
		receiptFor(t, bob, res.CallID().Value())
		carol.Chat("sip:bob@"+testDomain, "hello bob")
		deadline := time.Now().Add(softphone.Wait)
		for len(texts(bob.received())) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("bob received no text from carol: %d requests", len(bob.received()))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if m := texts(bob.received())[0]; string(m.Body()) != "hello bob" || m.From().Address.User != "carol" {
			t.Fatalf("bob received %q from %s", m.Body(), m.From().Address.User)
		}
	})
}

// A group's NG and texts reach linphonec from the group's address, and a
// text linphonec sends to the group's address is posted to the group.
func TestLinphoneGroup(t *testing.T) {
	softphone.Need(t, "linphonec", "linphone-cli")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("carol", "pw-carol", "Carol")
		carol := startLinphonec(t, s, "carol", "UDP", false)
		id := groupOf(t, s, "own", "carol")
		gc := fmt.Sprintf("gc-%d", id)
		carol.ExpectMessage(gc, fmt.Sprintf("~[GC M:'NG' GID:%d MID:", id))
		carol.Chat("sip:"+gc+"@"+testDomain, "#join")
		carol.ExpectMessage(gc, "You joined the group.")
		s.must("own", "sendMessage", map[string]any{"id": id, "mb": "welcome, carol"})
		carol.ExpectMessage(gc, "welcome, carol")
		carol.Chat("sip:"+gc+"@"+testDomain, "hello from linphone")
		waitGroupMessage(t, s, "own", id, "carol: hello from linphone")
	})
}

// Calls through gchd between linphonec and baresip, both without an audio
// device: linphonec calls baresip and hangs up, then baresip calls
// linphonec and hangs up.
func TestLinphoneCall(t *testing.T) {
	softphone.Need(t, "linphonec", "linphone-cli")
	softphone.Need(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("carol", "pw-carol", "Carol")
	s.addAccount("bob", "pw-bob", "Bob")
	bob := startBaresip(t, s, "bob", "UDP", softphone.AutoAnswer())
	carol := startLinphonec(t, s, "carol", "TCP", true)
	carol.Send("call sip:bob@" + testDomain)
	bob.Expect("Call established: sip:carol@" + testDomain)
	carol.Expect("connected.")
	carol.Send("terminate")
	carol.Expect("with sip:bob@" + testDomain + " ended")
	bob.Expect("sip:carol@" + testDomain + ": session closed")

	bob.Send("/dial sip:carol@" + testDomain)
	carol.Expect("connected.")
	bob.Expect("Call established: sip:carol@" + testDomain)
	bob.Send("/hangup")
	carol.Expect("with sip:bob@" + testDomain + " ended")
}

// loggedSIP is one SIP message of linphonec's log.
type loggedSIP struct {
	sent    bool   // sent by linphonec, else received
	start   string // request or status line
	callID  string
	ctype   string
	request bool
}

var logLine = regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} `)

// sipMessages parses the SIP messages out of linphonec's log (-d 6):
// each follows a line "message sent to [...]" or "received [N] new bytes".
func sipMessages(log string) []loggedSIP {
	var out []loggedSIP
	idx := logLine.FindAllStringIndex(log, -1)
	for i, at := range idx {
		end := len(log)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		first, rest, _ := strings.Cut(log[at[0]:end], "\n")
		sent := strings.Contains(first, "message sent to [")
		if !sent && !strings.Contains(first, "new bytes from [") {
			continue
		}
		head, _, _ := strings.Cut(rest, "\n\n")
		lines := strings.Split(head, "\n")
		m := loggedSIP{sent: sent, start: lines[0], request: !strings.HasPrefix(lines[0], "SIP/2.0 ")}
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(l, ":")
			switch strings.ToLower(strings.TrimSpace(k)) {
			case "call-id", "i":
				m.callID = strings.TrimSpace(v)
			case "content-type", "c":
				m.ctype = strings.TrimSpace(v)
			}
		}
		if m.start != "" {
			out = append(out, m)
		}
	}
	return out
}

// imdnAnswers waits until every receipt l sent to uri has a final
// answer other than a challenge, and returns those answers' status lines.
func imdnAnswers(t *testing.T, l *softphone.Linphonec, uri string) []string {
	t.Helper()
	deadline := time.Now().Add(softphone.Wait)
	for {
		msgs := sipMessages(l.SIPLog())
		final := map[string]string{}
		var ids []string
		for _, m := range msgs {
			switch {
			case m.sent && m.request && strings.HasPrefix(m.start, "MESSAGE "+uri+" ") && strings.HasPrefix(m.ctype, "message/imdn+xml"):
				if _, ok := final[m.callID]; !ok {
					ids = append(ids, m.callID)
					final[m.callID] = ""
				}
			case !m.sent && !m.request && !strings.HasPrefix(m.start, "SIP/2.0 1") && !strings.HasPrefix(m.start, "SIP/2.0 407"):
				if _, ok := final[m.callID]; ok {
					final[m.callID] = m.start
				}
			}
		}
		var answers []string
		for _, id := range ids {
			if final[id] != "" {
				answers = append(answers, final[id])
			}
		}
		if len(ids) > 0 && len(answers) == len(ids) {
			return answers
		}
		if time.Now().After(deadline) {
			t.Fatalf("receipts to %s: %d sent, answered %q", uri, len(ids), answers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linphonec answers a group text it receives with a delivery
// notification to the group's address; gchd answers it 200 and records
// it for the MID gchd put in the delivery's Call-ID. A display
// notification in the same form, naming what linphonec names, sets rd.
func TestLinphoneReceipts(t *testing.T) {
	softphone.Need(t, "linphonec", "linphone-cli")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("carol", "pw-carol", "Carol")
		id := groupOf(t, s, "own", "carol")
		s.must("carol", "joinGroup", map[string]any{"id": id})
		carol := startLinphonec(t, s, "carol", "UDP", false)
		gc := fmt.Sprintf("gc-%d", id)
		mid := sendMID(t, s, "own", map[string]any{"id": id, "mb": "read me"})
		carol.ExpectMessage(gc, "read me")
		// What linphonec names the message by in its receipt.
		named := regexp.MustCompile(fmt.Sprintf(`<message-id>(%s-%d-[^<]+)</message-id>`, gc, mid))
		var messageID string
		deadline := time.Now().Add(softphone.Wait)
		for messageID == "" {
			if m := named.FindStringSubmatch(carol.SIPLog()); m != nil {
				messageID = m[1]
			} else if time.Now().After(deadline) {
				t.Fatalf("linphonec sent no receipt naming MID %d", mid)
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
		for _, a := range imdnAnswers(t, carol, "sip:"+gc+"@"+testDomain) {
			if !strings.HasPrefix(a, "SIP/2.0 200") {
				t.Errorf("gchd answered linphonec's receipt %q", a)
			}
		}
		if r := receiptOf(t, s, "own", id, mid, "carol"); r.CF == "" || r.RD != "" {
			t.Fatalf("after delivery: %+v", r)
		}
		// linphonec has no command to mark a chat read; its display
		// notification would be this, from carol's other device.
		dev := newPhone(t, s, "carol", "TCP")
		if res := dev.send(imdnRequest(dev, gc, linphoneIMDN(messageID, "display", "displayed"), true)); res.StatusCode != 200 {
			t.Fatalf("display notification: %s", res.StartLine())
		}
		if r := receiptOf(t, s, "own", id, mid, "carol"); r.CF == "" || r.RD == "" {
			t.Fatalf("after display notification: %+v", r)
		}
	})
}

// receiptFor waits until a phone received a delivery notification naming
// callID (deflated, as Linphone sends it).
func receiptFor(t *testing.T, p *phone, callID string) {
	t.Helper()
	deadline := time.Now().Add(softphone.Wait)
	for {
		for _, r := range p.received() {
			if ct := r.ContentType(); ct == nil || ct.Value() != "message/imdn+xml" {
				continue
			}
			body := r.Body()
			if ce := r.GetHeader("Content-Encoding"); ce != nil && ce.Value() == "deflate" {
				if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
					body, _ = io.ReadAll(zr)
				}
			}
			if strings.Contains(string(body), "<message-id>"+callID+"</message-id>") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s received no notification naming %s", p.login, callID)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
