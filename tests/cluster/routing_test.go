package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
)

// threeNodes starts n1, n2 and n3 on one database with accounts for
// logins, and waits until each sees the others.
func threeNodes(t *testing.T, logins ...string) (*cluster, *node, *node, *node) {
	c := newCluster(t)
	n1, n2, n3 := c.start("n1"), c.start("n2"), c.start("n3")
	for _, n := range []*node{n1, n2, n3} {
		within(t, 30*time.Second, n.name+" ready and seeing 3 nodes", func() bool { return n.ready() == 200 && c.sees(t, n, 3)() })
	}
	testkit.AddAccounts(t, c.dsn, domain, logins...)
	return c, n1, n2, n3
}

// A MESSAGE between phones registered with different nodes goes through
// the node of each side, in both directions, over UDP and TCP; a request
// that makes itself out to be from a node is refused; a MESSAGE for a
// flow its node lost is stored and reaches the phone when it registers
// with a third node.
func TestMessagesAcrossNodes(t *testing.T) {
	_, n1, n2, n3 := threeNodes(t, "alice", "bob", "carol", "dave")
	alice := newPhone(t, n1, "alice", "UDP")
	bob := newPhone(t, n2, "bob", "TCP")
	carol := newPhone(t, n2, "carol", "UDP")
	dave := newPhone(t, n1, "dave", "TCP")
	for _, p := range []*phone{alice, bob, dave} {
		p.register()
	}
	// A registration with n2 is known on n1 within a second: an OPTIONS
	// for carol through n1 finds her phone (its answer, 405 from a phone
	// without an OPTIONS handler, instead of n1's 480).
	carol.register()
	start := time.Now()
	for alice.options("carol") == 480 {
		if time.Since(start) > time.Second {
			t.Fatal("n1 did not learn of carol's registration with n2 within a second")
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("n1 found carol's registration with n2 %v after its 200", time.Since(start).Round(time.Millisecond))
	for _, m := range []struct {
		from *phone
		to   *phone
	}{{alice, bob}, {bob, alice}, {carol, dave}, {dave, carol}, {alice, carol}, {bob, dave}} {
		body := fmt.Sprintf("%s to %s", m.from.login, m.to.login)
		if code := m.from.message(m.to.login, body); code != 200 {
			t.Fatalf("%s: %d, want 200 from the other node's phone", body, code)
		}
		within(t, 5*time.Second, m.to.login+" has "+body, m.to.has(body))
	}

	// Too large for a datagram: the nodes hand it over on TCP.
	big := strings.Repeat("x", 2000)
	if code := dave.message("bob", big); code != 200 {
		t.Fatalf("a 2000-byte MESSAGE across nodes: %d", code)
	}
	within(t, 5*time.Second, "bob has the large MESSAGE", bob.has(big))

	// A request from outside with a relay Route it made up.
	forged := sip.NewRequest(sip.MESSAGE, carol.contact)
	forged.AppendHeader(&sip.RouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: n2.sip,
		UriParams: sip.HeaderParams{{K: "lr", V: ""}, {K: "gchd-relay", V: "VURQfDEyNy4wLjAuMTo1MDYwAAAAAAAAAAAAAAAA"}}}})
	forged.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "mallory", Host: domain}, Params: sip.HeaderParams{{K: "tag", V: "x"}}})
	forged.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "carol", Host: domain}})
	forged.SetBody([]byte("forged"))
	res, err := alice.do(forged)
	if err != nil || res.StatusCode != 403 {
		t.Fatalf("forged node request: %v %v, want 403", res, err)
	}
	time.Sleep(300 * time.Millisecond)
	if carol.has("forged")() {
		t.Fatal("a forged node request reached the phone")
	}

	// bob's connection to n2 goes away: n2 answers 430 and n1 stores.
	bob.sip.Close()
	time.Sleep(300 * time.Millisecond)
	if code := alice.message("bob", "while you were away"); code != 202 {
		t.Fatalf("MESSAGE to a flow n2 lost: %d, want 202 (stored)", code)
	}
	bob3 := newPhone(t, n3, "bob", "TCP")
	bob3.register()
	within(t, 5*time.Second, "bob, now on n3, has the stored message", bob3.has("while you were away"))
}

// Calls from phones on n1 (UDP) and n3 (TCP, an offer too large for a
// datagram) to a phone on n2: both nodes stay on the route, so the ACK and
// BYE find their way, and a call cancelled while ringing is cancelled
// across the nodes.
func TestCallAcrossNodes(t *testing.T) {
	_, n1, n2, n3 := threeNodes(t, "alice", "bob", "carol")
	var callee *sipua.Callee
	bob := newPhone(t, n2, "bob", "TCP", func(b *phone) { callee = sipua.AnswerCalls(b.sip, b.contact) })
	bob.register()
	alice := newPhone(t, n1, "alice", "UDP")
	alice.register()
	carol := newPhone(t, n3, "carol", "TCP")
	carol.register()
	time.Sleep(time.Second)

	callFrom := func(caller *phone, sdp string) func(body string) (*sipgo.DialogClientSession, error) {
		ua := &sipgo.DialogUA{Client: caller.sip.Client, ContactHDR: sip.ContactHeader{Address: caller.contact}}
		return func(body string) (*sipgo.DialogClientSession, error) {
			req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "bob", Host: domain})
			req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: caller.login, Host: domain}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
			req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
			req.SetBody([]byte(body + sdp))
			caller.sip.Prepare(req)
			return ua.WriteInvite(t.Context(), req)
		}
	}
	// carol's offer is too large for a datagram: n3 hands it to n2 on TCP,
	// and the dialog still finds both nodes.
	for _, c := range []struct {
		caller *phone
		sdp    string
	}{{alice, ""}, {carol, strings.Repeat("a=x-padding:0123456789abcdef\r\n", 50)}} {
		invite := callFrom(c.caller, c.sdp)
		d, err := invite("v=0\r\n")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if err := d.WaitAnswer(ctx, sipgo.AnswerOptions{Username: c.caller.login, Password: testkit.Password(c.caller.login)}); err != nil {
			t.Fatalf("call from %s not answered: %v", c.caller.login, err)
		}
		if rr := d.InviteResponse.GetHeaders("Record-Route"); len(rr) != 4 {
			t.Fatalf("Record-Route = %v, want both entries of each node", rr)
		}
		if err := d.Ack(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-callee.Acked:
		case <-time.After(5 * time.Second):
			t.Fatalf("bob never got the ACK of %s's call", c.caller.login)
		}
		if err := d.Bye(ctx); err != nil {
			t.Fatalf("BYE across the nodes: %v", err)
		}
		select {
		case <-callee.Byes:
		case <-time.After(5 * time.Second):
			t.Fatalf("bob never got the BYE of %s's call", c.caller.login)
		}
	}
	if !callee.Answered() {
		t.Fatal("bob's phone did not answer")
	}
	select {
	case err := <-callee.Errs:
		t.Fatalf("bob's phone: %v", err)
	default:
	}

	invite := callFrom(alice, "")
	d2, err := invite("v=0\r\nring only\r\n")
	if err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel2()
	waitErr := make(chan error, 1)
	go func() {
		waitErr <- d2.WaitAnswer(ctx2, sipgo.AnswerOptions{Username: "alice", Password: testkit.Password("alice")})
	}()
	time.Sleep(500 * time.Millisecond)
	cancel2()
	if err := <-waitErr; err == nil {
		t.Fatal("a cancelled call was answered")
	}
}

// A group made on n3's API whose members are on n1 and n2: each member
// gets the NG and every text, whichever node it was posted on, over the
// API or from a phone.
func TestGroupAcrossNodes(t *testing.T) {
	_, n1, n2, n3 := threeNodes(t, "olga", "bob", "carol", "dave")
	bob := newPhone(t, n1, "bob", "UDP")
	carol := newPhone(t, n2, "carol", "TCP")
	dave := newPhone(t, n3, "dave", "UDP")
	for _, p := range []*phone{bob, carol, dave} {
		p.register()
	}
	time.Sleep(time.Second)
	id := groupID(t, api(t, n3, "olga", "addGroup", `{"gs":"Across","gm":[{"l":"bob"},{"l":"carol"},{"l":"dave"}]}`))
	ng := fmt.Sprintf("GID:%d ", id)
	for _, p := range []*phone{bob, carol, dave} {
		within(t, 5*time.Second, p.login+" has the NG", func() bool {
			for _, b := range p.bodies() {
				if strings.Contains(b, "M:'NG'") && strings.Contains(b, ng) {
					return true
				}
			}
			return false
		})
	}
	for _, p := range []*phone{bob, carol, dave} {
		node := map[string]*node{"bob": n1, "carol": n2, "dave": n3}[p.login]
		if got := api(t, node, p.login, "joinGroup", fmt.Sprintf(`{"id":%d}`, id)); got != "200" {
			t.Fatalf("joinGroup of %s: %s", p.login, got)
		}
	}
	if got := api(t, n3, "olga", "sendMessage", fmt.Sprintf(`{"id":%d,"mb":"from the API on n3"}`, id)); got != "200" {
		t.Fatalf("sendMessage: %s", got)
	}
	for _, p := range []*phone{bob, carol, dave} {
		within(t, 5*time.Second, p.login+" has the API's text", p.has("from the API on n3"))
	}
	if code := bob.message(fmt.Sprintf("gc-%d", id), "from bob's phone on n1"); code != 200 && code != 202 {
		t.Fatalf("post from bob's phone: %d", code)
	}
	for _, p := range []*phone{carol, dave} {
		within(t, 5*time.Second, p.login+" has bob's text", p.has("from bob's phone on n1"))
	}
}
