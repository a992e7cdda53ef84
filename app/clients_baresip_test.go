package app

import (
	"fmt"
	"testing"

	"gchd/internal/testkit"
	"gchd/internal/testkit/softphone"
	"gchd/storage"
)

// baresip 1.0 registers with gchd's default challenge over UDP and TCP,
// and unregisters when it quits.
func TestBaresipRegister(t *testing.T) {
	softphone.Need(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "Alice")
	for _, tr := range []string{"UDP", "TCP"} {
		t.Run(tr, func(t *testing.T) {
			b := startBaresip(t, s, "alice", tr)
			b.Expect("All 1 useragent registered successfully")
			b.Stop()
			waitNoBinding(t, s, "alice")
		})
	}
}

// One-to-one MESSAGE both ways between baresip and a phone of the
// harness, and a message that waited for baresip while it was offline.
func TestBaresipMessages(t *testing.T) {
	softphone.Need(t, "baresip", "baresip")
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
		alice := startBaresip(t, s, "alice", "UDP", softphone.Contacts("sip:bob@"+testDomain))
		alice.ExpectMessage("bob", "while you were away")
		if res := bob.message("alice", "hello alice"); res.StatusCode != 200 {
			t.Fatalf("MESSAGE to alice: %s", res.StartLine())
		}
		alice.ExpectMessage("bob", "hello alice")
		alice.Message("hello bob")
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
	softphone.Need(t, "baresip", "baresip")
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "Owner")
		s.addAccount("alice", "pw-alice", "Alice")
		id := groupOf(t, s, "own", "alice")
		gc := fmt.Sprintf("gc-%d", id)
		alice := startBaresip(t, s, "alice", "TCP", softphone.Contacts("sip:own@"+testDomain, "sip:"+gc+"@"+testDomain))
		alice.Expect(fmt.Sprintf("sip:%s@%s: \"~[GC M:'NG' GID:%d MID:", gc, testDomain, id))
		// baresip 1.0's /message goes to the current contact: the
		// group's address is selected first.
		alice.Send("/contact_next")
		alice.Expect("Current contact:  <sip:" + gc + "@" + testDomain + ">")
		alice.Message("#join")
		alice.ExpectMessage(gc, "You joined the group.")
		s.must("own", "sendMessage", map[string]any{"id": id, "mb": "welcome, alice"})
		alice.ExpectMessage(gc, "welcome, alice")
		alice.Message("hello from baresip")
		waitGroupMessage(t, s, "own", id, "alice: hello from baresip")
	})
}

// A call from one baresip to another through gchd, without any audio
// device: set up, then hung up by the caller.
func TestBaresipCall(t *testing.T) {
	softphone.Need(t, "baresip", "baresip")
	s := startSIP(t)
	s.addAccount("alice", "pw-alice", "Alice")
	s.addAccount("bob", "pw-bob", "Bob")
	bob := startBaresip(t, s, "bob", "TCP", softphone.AutoAnswer())
	alice := startBaresip(t, s, "alice", "UDP")
	alice.Send("/dial sip:bob@" + testDomain)
	bob.Expect("Call established: sip:alice@" + testDomain)
	alice.Expect("Call established: sip:bob@" + testDomain)
	alice.Send("/hangup")
	alice.Expect("terminate call")
	// The BYE reached bob through gchd: baresip names a hang-up by the
	// peer "Connection reset by peer".
	bob.Expect("sip:alice@" + testDomain + ": session closed")
}
