package cluster_test

import (
	"fmt"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/internal/testkit/softphone"
)

// account is login's account on node n over transport.
func account(n *node, login, transport string) softphone.Account {
	return softphone.Account{Login: login, Password: testkit.Password(login), Domain: domain, Transport: transport,
		Addr: fmt.Sprintf("127.0.0.1:%d", n.sip)}
}

// registeredOn waits until login's binding over transport, held by node n,
// is in the database: then every node finds it within a second.
func (c *cluster) registeredOn(t *testing.T, n *node, login, transport string) {
	t.Helper()
	within(t, softphone.Wait, login+" registered with "+n.name, func() bool {
		var count int
		err := c.db.QueryRow(`SELECT count(*) FROM bindings WHERE (aor = $1 OR aor LIKE $1 || '@%')
			AND node = $2 AND lower(transport) = lower($3)`, login, n.name, transport).Scan(&count)
		if err != nil {
			t.Fatal(err)
		}
		return count > 0
	})
	time.Sleep(100 * time.Millisecond) // the other nodes read it on its announcement
}

// relayed fails unless node n counts requests of method between nodes in
// direction: what went through a single node would prove nothing.
func relayed(t *testing.T, n *node, method, direction string) {
	t.Helper()
	sample := fmt.Sprintf(`gchd_sip_relayed_total{direction=%q,method=%q}`, direction, method)
	if v, ok := n.metric(sample); !ok || v < 1 {
		t.Errorf("%s: %s = %v (found %v)", n.name, sample, v, ok)
	}
}

// The softphones users have, each registered with a different node:
// baresip on n1 over UDP, linphonec on n2 over TCP and baresip on n3 over
// TCP. They exchange MESSAGEs, call each other across nodes (set up and
// hung up by either side), and take part in a group made on n3's API.
func TestSoftphonesAcrossNodes(t *testing.T) {
	softphone.Need(t, "baresip", "baresip")
	softphone.Need(t, "linphonec", "linphone-cli")
	c, n1, n2, n3 := threeNodes(t, "olga", "alice", "carol", "bob")
	alice := softphone.StartBaresip(t, account(n1, "alice", "UDP"), softphone.Contacts("sip:carol@"+domain))
	c.registeredOn(t, n1, "alice", "UDP")
	carol := softphone.StartLinphonec(t, account(n2, "carol", "TCP"), true)
	c.registeredOn(t, n2, "carol", "TCP")
	bob := softphone.StartBaresip(t, account(n3, "bob", "TCP"), softphone.AutoAnswer())
	c.registeredOn(t, n3, "bob", "TCP")

	t.Run("messages", func(t *testing.T) {
		alice.Message("hello carol, from n1")
		carol.ExpectMessage("alice", "hello carol, from n1")
		carol.Chat("sip:alice@"+domain, "hello alice, from n2")
		alice.ExpectMessage("carol", "hello alice, from n2")
		relayed(t, n1, "MESSAGE", "out")
		relayed(t, n2, "MESSAGE", "in")
	})

	t.Run("calls", func(t *testing.T) {
		// baresip on n1 calls linphonec on n2, which answers; the caller
		// hangs up: the BYE follows the dialog's route through both nodes.
		alice.Dial("carol")
		alice.ExpectCall("carol")
		carol.Expect("connected.")
		alice.Send("/hangup")
		carol.Expect("with sip:alice@" + domain + " ended")
		// linphonec on n2 calls baresip on n3 and hangs up.
		carol.Call("bob")
		bob.ExpectCall("carol")
		carol.Expect("connected.")
		carol.Send("terminate")
		carol.Expect("with sip:bob@" + domain + " ended")
		bob.ExpectClosed("carol")
		// The callee hangs up: baresip on n3 ends linphonec's call.
		carol.Call("bob")
		bob.ExpectCall("carol")
		carol.Expect("connected.")
		bob.Send("/hangup")
		carol.Expect("with sip:bob@" + domain + " ended")
		relayed(t, n1, "INVITE", "out")
		relayed(t, n2, "INVITE", "in")
		relayed(t, n2, "INVITE", "out")
		relayed(t, n3, "INVITE", "in")
	})

	t.Run("group", func(t *testing.T) {
		id := groupID(t, api(t, n3, "olga", "addGroup", `{"gs":"Phones","gm":[{"l":"alice"},{"l":"carol"},{"l":"bob"}]}`))
		gc := fmt.Sprintf("gc-%d", id)
		ng := fmt.Sprintf("~[GC M:'NG' GID:%d MID:", id)
		alice.Expect(fmt.Sprintf("sip:%s@%s: \"%s", gc, domain, ng))
		carol.ExpectMessage(gc, ng)
		bob.Expect(fmt.Sprintf("sip:%s@%s: \"%s", gc, domain, ng))
		for _, m := range []struct {
			login string
			n     *node
		}{{"alice", n1}, {"carol", n2}, {"bob", n3}} {
			if got := api(t, m.n, m.login, "joinGroup", fmt.Sprintf(`{"id":%d}`, id)); got != "200" {
				t.Fatalf("joinGroup of %s: %s", m.login, got)
			}
		}
		if got := api(t, n3, "olga", "sendMessage", fmt.Sprintf(`{"id":%d,"mb":"from the API on n3"}`, id)); got != "200" {
			t.Fatalf("sendMessage: %s", got)
		}
		alice.ExpectMessage(gc, "from the API on n3")
		carol.ExpectMessage(gc, "from the API on n3")
		bob.ExpectMessage(gc, "from the API on n3")
		// A post from linphonec on n2 to the group's address.
		carol.Chat("sip:"+gc+"@"+domain, "from linphonec on n2")
		alice.ExpectMessage(gc, "from linphonec on n2")
		bob.ExpectMessage(gc, "from linphonec on n2")
	})
}
