package app

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
)

// baresip is baresip 1.0 (Debian 12's), headless: commands on its
// standard input (the stdio module), its configuration in a directory of
// its own (-f), no sound card (audio from a WAV file, no player).
type baresip struct {
	*clientProc
	login string
}

type baresipOption func(*baresipSetup)

type baresipSetup struct {
	params   string   // extra account parameters
	contacts []string // SIP URIs; the first is the current contact
}

// baresipAutoAnswer makes the account answer calls by itself.
func baresipAutoAnswer() baresipOption {
	return func(b *baresipSetup) { b.params += ";answermode=auto" }
}

// baresipContacts lists the contacts; /message goes to the first.
func baresipContacts(uris ...string) baresipOption {
	return func(b *baresipSetup) { b.contacts = uris }
}

// baresipConfig is the configuration every baresip of the tests uses, as
// docs/sip.md shows it: SIP on an ephemeral port of loopback, G.711, and
// a WAV file instead of a microphone.
func baresipConfig(wav string) string {
	return `poll_method		epoll
sip_listen		127.0.0.1:0
audio_source		aufile,` + wav + `
module_path		/usr/lib/baresip/modules
module			stdio.so
module			g711.so
module			aufile.so
module_tmp		account.so
module_app		contact.so
module_app		menu.so
`
}

// baresipAccount is the accounts line of login reaching gchd at addr over
// transport.
func baresipAccount(login, transport, addr, params string) string {
	tr := strings.ToLower(transport)
	return fmt.Sprintf("<sip:%s@%s;transport=%s>;auth_pass=pw-%s;outbound=\"sip:%s;transport=%s\";regint=600%s\n",
		login, testDomain, tr, login, addr, tr, params)
}

// startBaresip starts baresip for login over transport and waits until
// gchd holds its registration.
func startBaresip(t *testing.T, s *server, login, transport string, opts ...baresipOption) *baresip {
	t.Helper()
	bin := needClient(t, "baresip", "baresip")
	var setup baresipSetup
	for _, o := range opts {
		o(&setup)
	}
	dir := t.TempDir()
	files := map[string]string{
		"config":   baresipConfig(silenceWAV(t, dir, 30)),
		"accounts": baresipAccount(login, transport, s.app.SIPAddr(transport), setup.params),
	}
	var contacts strings.Builder
	for _, c := range setup.contacts {
		fmt.Fprintf(&contacts, "<%s>\n", c)
	}
	files["contacts"] = contacts.String()
	if len(setup.contacts) > 0 {
		files["current_contact"] = setup.contacts[0] + "\n"
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &baresip{clientProc: startClient(t, "baresip "+login, "/quit", dir, nil, bin, "-f", dir), login: login}
	b.expect(login+"@"+testDomain+": {0/"+strings.ToUpper(transport), "200 OK")
	waitBinding(t, s, login, transport)
	return b
}

// message sends text to the current contact.
func (b *baresip) message(text string) { b.send("/message " + text) }

// expectMessage waits for a MESSAGE from the user (or group) part from
// with text, as baresip prints it.
func (b *baresip) expectMessage(from, text string) {
	b.t.Helper()
	b.expect(fmt.Sprintf("sip:%s@%s: %q", from, testDomain, text))
}

// baresip 1.0 registers with gchd's default challenge over UDP and TCP,
// and unregisters when it quits.
func TestBaresipRegister(t *testing.T) {
	needClient(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "Alice")
	for _, tr := range []string{"UDP", "TCP"} {
		t.Run(tr, func(t *testing.T) {
			b := startBaresip(t, s, "alice", tr)
			b.expect("All 1 useragent registered successfully")
			b.stop()
			waitNoBinding(t, s, "alice")
		})
	}
}

// One-to-one MESSAGE both ways between baresip and a phone of the
// harness, and a message that waited for baresip while it was offline.
func TestBaresipMessages(t *testing.T) {
	needClient(t, "baresip", "baresip")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("alice", "pw-alice", "Alice")
		s.addAccount("bob", "pw-bob", "Bob")
		bob := newPhone(t, s, "bob", "TCP")
		bob.register()
		// alice is offline: the message waits for her.
		if res := bob.message("alice", "while you were away"); res.StatusCode != 202 {
			t.Fatalf("MESSAGE to offline alice: %s", res.StartLine())
		}
		alice := startBaresip(t, s, "alice", "UDP", baresipContacts("sip:bob@"+testDomain))
		alice.expectMessage("bob", "while you were away")
		if res := bob.message("alice", "hello alice"); res.StatusCode != 200 {
			t.Fatalf("MESSAGE to alice: %s", res.StartLine())
		}
		alice.expectMessage("bob", "hello alice")
		alice.message("hello bob")
		got := bob.waitFor(1)
		if m := got[0]; string(m.Body()) != "hello bob" || m.From().Address.User != "alice" {
			t.Fatalf("bob received %q from %s", m.Body(), m.From().Address.User)
		}
	})
}

// A group's NG and texts reach baresip from the group's address (NG while
// it was offline, on registration), and a text baresip sends to the
// group's address is posted to the group.
func TestBaresipGroup(t *testing.T) {
	needClient(t, "baresip", "baresip")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("alice", "pw-alice", "Alice")
		id := groupOf(t, s, "own", "alice")
		gc := fmt.Sprintf("gc-%d", id)
		alice := startBaresip(t, s, "alice", "TCP", baresipContacts("sip:own@"+testDomain, "sip:"+gc+"@"+testDomain))
		alice.expect(fmt.Sprintf("sip:%s@%s: \"~[GC M:'NG' GID:%d MID:", gc, testDomain, id))
		// baresip 1.0's /message goes to the current contact: the
		// group's address is selected first.
		alice.send("/contact_next")
		alice.expect("Current contact:  <sip:" + gc + "@" + testDomain + ">")
		alice.message("#join")
		alice.expectMessage(gc, "You joined the group.")
		s.must("own", "sendMessage", map[string]any{"id": id, "mb": "welcome, alice"})
		alice.expectMessage(gc, "welcome, alice")
		alice.message("hello from baresip")
		waitGroupMessage(t, s, "own", id, "alice: hello from baresip")
	})
}

// A call from one baresip to another through gchd, without any audio
// device: set up, then hung up by the caller.
func TestBaresipCall(t *testing.T) {
	needClient(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "Alice")
	s.addAccount("bob", "pw-bob", "Bob")
	bob := startBaresip(t, s, "bob", "TCP", baresipAutoAnswer())
	alice := startBaresip(t, s, "alice", "UDP")
	alice.send("/dial sip:bob@" + testDomain)
	bob.expect("Call established: sip:alice@" + testDomain)
	alice.expect("Call established: sip:bob@" + testDomain)
	alice.send("/hangup")
	alice.expect("terminate call")
	// The BYE reached bob through gchd: baresip names a hang-up by the
	// peer "Connection reset by peer".
	bob.expect("sip:alice@" + testDomain + ": session closed")
}
