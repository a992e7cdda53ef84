package registrar_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

// peers is a test's view of which nodes are live, under which epoch.
type peers struct {
	mu    sync.Mutex
	epoch map[string]int64
}

func (p *peers) set(node string, epoch int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if epoch == 0 {
		delete(p.epoch, node)
		return
	}
	p.epoch[node] = epoch
}

func (p *peers) peer(name string) (int64, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e, ok := p.epoch[name]
	return e, name + ".example:5060", ok
}

func nodePolicy(node string, epoch int64, live *peers) registrar.Policy {
	p := registrar.DefaultPolicy()
	p.Node = node
	p.Epoch = func() int64 { return epoch }
	p.Peer = live.peer
	return p
}

func regFrom(aor, callID, uri, transport, source string) registrar.RegisterRequest {
	return registrar.RegisterRequest{AOR: aor, CallID: callID, CSeq: 1, Contacts: []registrar.ContactRequest{contact(uri, 300)},
		Expires: -1, Transport: transport, Source: source}
}

// Two nodes on one database: each finds the other's bindings once told
// (Refresh) or on its own (Reconcile), reaches them only while that node
// is live (and, over a connection, under the epoch that registered them),
// and agrees with it on who sends a member's deliveries.
func TestBindingsAcrossNodes(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		live := &peers{epoch: map[string]int64{"n1": 1, "n2": 1}}
		b1, stop1 := newBindings(t, db, nodePolicy("n1", 1, live))
		defer stop1()
		b2, stop2 := newBindings(t, db, nodePolicy("n2", 1, live))
		defer stop2()

		if _, err := b1.Register(ctx, regFrom("alice", "a1", "sip:alice@192.0.2.1", "UDP", "192.0.2.1:5060")); err != nil {
			t.Fatal(err)
		}
		if _, err := b1.Register(ctx, regFrom("bob", "b1", "sip:bob@bob.invalid;transport=tcp", "TCP", "192.0.2.2:40000")); err != nil {
			t.Fatal(err)
		}
		if got := b2.Lookup("alice"); len(got) != 0 {
			t.Fatalf("n2 knows alice before reading: %v", got)
		}
		changed, err := b2.Refresh(ctx, []string{"alice"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(changed, []string{"alice"}) {
			t.Fatalf("Refresh changed %v, want alice", changed)
		}
		if got := b2.Lookup("alice"); len(got) != 1 || got[0].Node != "n1" || got[0].Epoch != 1 {
			t.Fatalf("n2 sees alice as %+v, want one binding of n1 at epoch 1", got)
		}
		if changed, _ := b2.Refresh(ctx, []string{"alice"}); len(changed) != 0 {
			t.Fatalf("a second Refresh changed %v", changed)
		}
		if _, err := b2.Reconcile(ctx); err != nil {
			t.Fatal(err)
		}
		if got := b2.Lookup("bob"); len(got) != 1 {
			t.Fatalf("n2 after Reconcile sees bob as %v", got)
		}
		if o1, o2 := b1.Owner("alice"), b2.Owner("alice"); o1 != "n1" || o2 != "n1" {
			t.Fatalf("owner of alice: n1 says %q, n2 says %q, want n1", o1, o2)
		}

		// n1 restarts under epoch 2: its UDP binding still reaches alice
		// through it, bob's connection died with the old process.
		live.set("n1", 2)
		if got := b2.Lookup("alice"); len(got) != 1 {
			t.Fatalf("alice over UDP after n1's restart: %v", got)
		}
		if got := b2.Lookup("bob"); len(got) != 0 {
			t.Fatalf("bob's connection of n1's old epoch is still reachable: %v", got)
		}
		if got := b2.LookupAll("bob"); len(got) != 1 || !got[0].Unreachable {
			t.Fatalf("LookupAll of bob: %+v, want the binding marked unreachable", got)
		}
		// n1's lease lapses: none of its bindings is reachable.
		live.set("n1", 0)
		if got := b2.Lookup("alice"); len(got) != 0 {
			t.Fatalf("alice through a node gone: %v", got)
		}
		if o := b2.Owner("alice"); o != "" {
			t.Fatalf("owner of alice with n1 gone: %q", o)
		}
		live.set("n1", 2)

		// alice registers a second device with n2: the newest flow is
		// n2's, and both nodes say n2 sends her deliveries.
		time.Sleep(2 * time.Millisecond)
		if _, err := b2.Register(ctx, regFrom("alice", "a2", "sip:alice@192.0.2.9", "UDP", "192.0.2.9:5060")); err != nil {
			t.Fatal(err)
		}
		if _, err := b1.Refresh(ctx, []string{"alice"}); err != nil {
			t.Fatal(err)
		}
		if o1, o2 := b1.Owner("alice"), b2.Owner("alice"); o1 != "n2" || o2 != "n2" {
			t.Fatalf("owner of alice: n1 says %q, n2 says %q, want n2", o1, o2)
		}
		if got := b1.Lookup("alice"); len(got) != 2 {
			t.Fatalf("n1 sees %d bindings of alice, want 2", len(got))
		}
		if on := b1.OnNode("n2"); !slices.Equal(on, []string{"alice"}) {
			t.Fatalf("OnNode(n2) = %v", on)
		}
		// n1 holds flows of alice and bob: a limit of one gives up.
		if on, ok := b1.OnNodeUpTo("n1", 1); ok || on != nil {
			t.Fatalf("OnNodeUpTo(n1, 1) = %v, %v; want nil, false", on, ok)
		}
		if on, ok := b1.OnNodeUpTo("n1", 2); !ok || len(on) != 2 {
			t.Fatalf("OnNodeUpTo(n1, 2) = %v, %v; want two AORs", on, ok)
		}

		// The device of n1 moves to n2 (same Contact): n1 drops its own.
		time.Sleep(2 * time.Millisecond)
		if _, err := b2.Register(ctx, regFrom("alice", "a3", "sip:alice@192.0.2.1", "UDP", "192.0.2.1:5060")); err != nil {
			t.Fatal(err)
		}
		if _, err := b1.Refresh(ctx, []string{"alice"}); err != nil {
			t.Fatal(err)
		}
		for _, bd := range b1.Lookup("alice") {
			if bd.Node != "n2" {
				t.Fatalf("n1 kept its own binding of a device that moved: %+v", bd)
			}
		}

		// A node's expired rows are its own to remove while it lives.
		if _, err := db.Nodes().JoinNode(ctx, "n1", "n1.example:5060", time.Minute, false); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-time.Minute)
		stale := registrar.Binding{AOR: "carol", URI: "sip:carol@192.0.2.3", Expires: past, CallID: "c", CSeq: 1,
			Transport: "UDP", Source: "192.0.2.3:5060", Node: "n1", Epoch: 2, Updated: past}
		gone := stale
		gone.URI, gone.Node = "sip:carol@192.0.2.4", "n9"
		if err := db.BindingStore().SaveBindings(ctx, []registrar.Binding{stale, gone}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := db.BindingStore().DeleteExpiredBindings(ctx, "n2", time.Now()); err != nil {
			t.Fatal(err)
		}
		left, err := db.ListBindings(ctx, "carol", past.Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != 1 || left[0].Node != "n1" {
			t.Fatalf("after n2's expiry run carol has %+v, want only live n1's row (n9 holds no lease)", left)
		}
	})
}
