package app

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/storage"
)

// linphonec is Linphone's console client (Debian 12's linphone-cli,
// liblinphone 5.1), headless: commands on its standard input, its
// configuration in a file (-c), its home (chat database) in a directory
// of its own, its SIP log (-d 6 -l) kept for the test to read.
type linphonec struct {
	*clientProc
	login string
	log   string
}

// linphoneRC is the configuration file every linphonec of the tests uses,
// as docs/sip.md shows it: SIP and RTP on ephemeral ports, gchd at addr
// over transport as the registrar and outbound proxy.
func linphoneRC(login, transport, addr string) string {
	tr := strings.ToLower(transport)
	return fmt.Sprintf(`[sip]
sip_port=-1
sip_tcp_port=-1
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port=-1
video_rtp_port=-1
[proxy_0]
reg_proxy=<sip:%[3]s;transport=%[4]s>
reg_route=<sip:%[3]s;transport=%[4]s;lr>
reg_identity=sip:%[1]s@%[2]s
reg_expires=600
reg_sendregister=1
[auth_info_0]
username=%[1]s
passwd=pw-%[1]s
realm=%[2]s
domain=%[2]s
`, login, testDomain, addr, tr)
}

// startLinphonec starts linphonec for login over transport, with sound
// from files instead of a sound card, and waits until gchd holds its
// registration. autoAnswer answers calls at once (-a).
func startLinphonec(t *testing.T, s *server, login, transport string, autoAnswer bool) *linphonec {
	t.Helper()
	bin := needClient(t, "linphonec", "linphone-cli")
	dir := t.TempDir()
	rc := filepath.Join(dir, "linphonerc")
	if err := os.WriteFile(rc, []byte(linphoneRC(login, transport, s.app.SIPAddr(transport))), 0o600); err != nil {
		t.Fatal(err)
	}
	// liblinphone keeps its chat database under $HOME/.local/share.
	if err := os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o700); err != nil {
		t.Fatal(err)
	}
	l := &linphonec{login: login, log: filepath.Join(dir, "linphone.log")}
	args := []string{"-c", rc, "-d", "6", "-l", l.log}
	if autoAnswer {
		args = append(args, "-a")
	}
	l.clientProc = startClient(t, "linphonec "+login, "quit", dir, []string{"HOME=" + dir}, bin, args...)
	l.send("soundcard use files")
	waitBinding(t, s, login, transport)
	return l
}

// chat sends text to a SIP URI.
func (l *linphonec) chat(uri, text string) { l.send("chat " + uri + " " + text) }

// expectMessage waits for text from the user (or group) part from, as
// linphonec prints it.
func (l *linphonec) expectMessage(from, text string) {
	l.t.Helper()
	l.expect("Message received from ", "sip:"+from+"@"+testDomain, ": "+text)
}

// sipLog is linphonec's SIP log so far.
func (l *linphonec) sipLog() string {
	b, _ := os.ReadFile(l.log)
	return string(b)
}

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
	needClient(t, "linphonec", "linphone-cli")
	s := startSIP(t)
	s.addAccount("carol", "pw-carol", "Carol")
	for _, tr := range []string{"UDP", "TCP"} {
		t.Run(tr, func(t *testing.T) {
			l := startLinphonec(t, s, "carol", tr, false)
			// gchd commits the binding just before linphonec reads the 200.
			for i := 0; ; i++ {
				l.send("status register")
				if _, err := l.await(time.Second, "registered, identity=sip:carol@"+testDomain); err == nil {
					break
				}
				if i == 10 {
					t.Fatalf("linphonec never says it is registered:\n%s", l.output())
				}
			}
			l.stop()
			waitNoBinding(t, s, "carol")
		})
	}
}

// One-to-one MESSAGE both ways between linphonec and a phone of the
// harness, and a message that waited for linphonec while it was offline.
func TestLinphoneMessages(t *testing.T) {
	needClient(t, "linphonec", "linphone-cli")
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
		carol.expectMessage("bob", "while you were away")
		res := bob.message("carol", "hello carol")
		if res.StatusCode != 200 {
			t.Fatalf("MESSAGE to carol: %s", res.StartLine())
		}
		carol.expectMessage("bob", "hello carol")
		// linphonec's delivery notification comes back to bob through
		// gchd, naming bob's MESSAGE by its Call-ID.
		receiptFor(t, bob, res.CallID().Value())
		carol.chat("sip:bob@"+testDomain, "hello bob")
		deadline := time.Now().Add(clientWait)
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
	needClient(t, "linphonec", "linphone-cli")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("carol", "pw-carol", "Carol")
		carol := startLinphonec(t, s, "carol", "UDP", false)
		id := groupOf(t, s, "own", "carol")
		gc := fmt.Sprintf("gc-%d", id)
		carol.expectMessage(gc, fmt.Sprintf("~[GC M:'NG' GID:%d MID:", id))
		carol.chat("sip:"+gc+"@"+testDomain, "#join")
		carol.expectMessage(gc, "You joined the group.")
		s.must("own", "sendMessage", map[string]any{"id": id, "mb": "welcome, carol"})
		carol.expectMessage(gc, "welcome, carol")
		carol.chat("sip:"+gc+"@"+testDomain, "hello from linphone")
		waitGroupMessage(t, s, "own", id, "carol: hello from linphone")
	})
}

// Calls through gchd between linphonec and baresip, both without an audio
// device: linphonec calls baresip and hangs up, then baresip calls
// linphonec and hangs up.
func TestLinphoneCall(t *testing.T) {
	needClient(t, "linphonec", "linphone-cli")
	needClient(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("carol", "pw-carol", "Carol")
	s.addAccount("bob", "pw-bob", "Bob")
	bob := startBaresip(t, s, "bob", "UDP", baresipAutoAnswer())
	carol := startLinphonec(t, s, "carol", "TCP", true)
	carol.send("call sip:bob@" + testDomain)
	bob.expect("Call established: sip:carol@" + testDomain)
	carol.expect("connected.")
	carol.send("terminate")
	carol.expect("with sip:bob@" + testDomain + " ended")
	bob.expect("sip:carol@" + testDomain + ": session closed")

	bob.send("/dial sip:carol@" + testDomain)
	carol.expect("connected.")
	bob.expect("Call established: sip:carol@" + testDomain)
	bob.send("/hangup")
	carol.expect("with sip:bob@" + testDomain + " ended")
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

// imdnAnswers waits until every receipt linphonec sent to uri has a final
// answer other than a challenge, and returns those answers' status lines.
func (l *linphonec) imdnAnswers(uri string) []string {
	l.t.Helper()
	deadline := time.Now().Add(clientWait)
	for {
		msgs := sipMessages(l.sipLog())
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
			l.t.Fatalf("receipts to %s: %d sent, answered %q", uri, len(ids), answers)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// linphonec answers a group text it receives with a delivery
// notification to the group's address; gchd answers it 200 and records
// it for the MID gchd put in the delivery's Call-ID. A display
// notification in the same form, naming what linphonec names, sets rd.
func TestLinphoneReceipts(t *testing.T) {
	needClient(t, "linphonec", "linphone-cli")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("carol", "pw-carol", "Carol")
		id := groupOf(t, s, "own", "carol")
		s.must("carol", "joinGroup", map[string]any{"id": id})
		carol := startLinphonec(t, s, "carol", "UDP", false)
		gc := fmt.Sprintf("gc-%d", id)
		mid := sendMID(t, s, "own", map[string]any{"id": id, "mb": "read me"})
		carol.expectMessage(gc, "read me")
		// What linphonec names the message by in its receipt.
		named := regexp.MustCompile(fmt.Sprintf(`<message-id>(%s-%d-[^<]+)</message-id>`, gc, mid))
		var messageID string
		deadline := time.Now().Add(clientWait)
		for messageID == "" {
			if m := named.FindStringSubmatch(carol.sipLog()); m != nil {
				messageID = m[1]
			} else if time.Now().After(deadline) {
				t.Fatalf("linphonec sent no receipt naming MID %d", mid)
			} else {
				time.Sleep(50 * time.Millisecond)
			}
		}
		for _, a := range carol.imdnAnswers("sip:" + gc + "@" + testDomain) {
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
	deadline := time.Now().Add(clientWait)
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
