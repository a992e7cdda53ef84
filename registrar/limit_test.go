package registrar_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

// storedURIs lists the AOR's stored Contact URIs, sorted.
func storedURIs(t *testing.T, db *storage.DB, aor string) []string {
	t.Helper()
	all, err := db.BindingStore().LoadBindings(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, bd := range all {
		if bd.AOR == aor {
			out = append(out, bd.URI)
		}
	}
	slices.Sort(out)
	return out
}

func sortedURIs(bs []registrar.Binding) []string {
	out := uris(bs)
	slices.Sort(out)
	return out
}

// MaxContacts holds in memory and in the store, whatever the REGISTERs:
// one that alone brings more than the limit changes nothing, one that
// refreshes some bindings and adds others evicts only bindings it did not
// write, and the store always holds what memory holds.
func TestContactLimitHoldsInStore(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		p := registrar.DefaultPolicy()
		p.MaxContacts = 3
		b, stop := newBindings(t, db, p)
		defer func() { stop() }()
		same := func(when string) {
			t.Helper()
			mem, st := sortedURIs(b.Lookup("alice")), storedURIs(t, db, "alice")
			if len(mem) > p.MaxContacts || !slices.Equal(mem, st) {
				t.Fatalf("%s: memory %v, stored %v (limit %d)", when, mem, st, p.MaxContacts)
			}
		}
		var many []registrar.ContactRequest
		for i := range 50 {
			many = append(many, contact(fmt.Sprintf("sip:a@192.0.2.%d", i+1), -1))
		}
		if _, err := b.Register(ctx, reg("c1", 1, -1, many...)); !errors.Is(err, registrar.ErrTooManyContacts) {
			t.Fatalf("50 contacts at once: %v", err)
		}
		same("after 50 at once")
		if len(b.Lookup("alice")) != 0 {
			t.Fatal("a refused REGISTER left bindings")
		}
		if _, err := b.Register(ctx, reg("c1", 2, -1, many[:3]...)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
		// The refreshed first contact stays; the two new ones evict
		// the other two, never each other or the refreshed one.
		res, err := b.Register(ctx, reg("c1", 3, -1, many[3], many[0], many[4]))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := sortedURIs(res.Bindings), []string{"sip:a@192.0.2.1", "sip:a@192.0.2.4", "sip:a@192.0.2.5"}; !slices.Equal(got, want) {
			t.Fatalf("after refresh and two new: %v, want %v", got, want)
		}
		same("after refresh and two new")
		// Removals count as Kamailio counts them: one out and one in at
		// the limit fits, even under the reject policy.
		stop()
		p.RejectOverflow = true
		b, stop = newBindings(t, db, p)
		res, err = b.Register(ctx, reg("c1", 4, -1, many[5], contact("sip:a@192.0.2.1", 0)))
		if err != nil || len(res.Bindings) != 3 {
			t.Fatalf("one in, one out under reject: %v %v", uris(res.Bindings), err)
		}
		same("one in, one out")

		// Concurrent REGISTERs of one AOR, each with new contacts: the
		// store ends with what memory holds.
		stop()
		p.RejectOverflow = false
		b, stop = newBindings(t, db, p)
		var wg sync.WaitGroup
		for g := range 40 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := b.Register(ctx, reg(fmt.Sprintf("g%d", g), 1, -1,
					contact(fmt.Sprintf("sip:a@198.51.100.%d", g), -1), contact(fmt.Sprintf("sip:b@198.51.100.%d", g), -1)))
				if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		same("after concurrent REGISTERs")
	})
}

// A store that holds more than MaxContacts for an AOR (written by an older
// version, or the limit was lowered) gives back only the newest after a
// restart, and the rest is deleted. A UDP binding stored as reachable at
// its Contact comes back so only when the Contact is its source's address.
func TestLoadEnforcesLimitAndFlows(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		now := time.Now()
		var put []registrar.Binding
		for i := range 25 {
			put = append(put, registrar.Binding{AOR: "alice", URI: fmt.Sprintf("sip:a%d@192.0.2.1:5060", i), Expires: now.Add(time.Hour),
				CallID: "x", CSeq: 1, Transport: "UDP", Source: "192.0.2.1:5060", Node: "gchd", NAT: true,
				Updated: now.Add(time.Duration(i) * time.Second)})
		}
		flow := func(uri, source string) registrar.Binding {
			return registrar.Binding{AOR: "bob", URI: uri, Expires: now.Add(time.Hour), CallID: "y", CSeq: 1,
				Transport: "UDP", Source: source, Node: "gchd", Updated: now}
		}
		put = append(put,
			flow("sip:bob@192.0.2.7:5070", "192.0.2.7:40000"),
			flow("sip:bob@localhost:5070", "192.0.2.7:40000"),
			flow("sip:bob@203.0.113.9:5060", "192.0.2.7:40000"),
			flow("sip:bob@[2001:db8::1]:5060;transport=udp", "[2001:db8::1]:40000"),
			flow("sip:bob@192.0.2.7:5070?x=@192.0.2.7", "192.0.2.7:40000"),
		)
		if err := db.BindingStore().SaveBindings(ctx, put, nil); err != nil {
			t.Fatal(err)
		}
		p := registrar.DefaultPolicy()
		b, stop := newBindings(t, db, p)
		defer stop()
		got := b.Lookup("alice")
		if len(got) != p.MaxContacts {
			t.Fatalf("loaded %d bindings, limit %d", len(got), p.MaxContacts)
		}
		for _, bd := range got {
			var i int
			fmt.Sscanf(bd.URI, "sip:a%d@", &i)
			if i < 25-p.MaxContacts {
				t.Fatalf("kept an old binding %s", bd.URI)
			}
		}
		if st := storedURIs(t, db, "alice"); len(st) != p.MaxContacts {
			t.Fatalf("%d stored after load, limit %d", len(st), p.MaxContacts)
		}
		asWritten := map[string]bool{}
		for _, bd := range b.Lookup("bob") {
			asWritten[bd.URI] = !bd.NAT
		}
		want := map[string]bool{
			"sip:bob@192.0.2.7:5070":                   true,
			"sip:bob@localhost:5070":                   false,
			"sip:bob@203.0.113.9:5060":                 false,
			"sip:bob@[2001:db8::1]:5060;transport=udp": true,
			"sip:bob@192.0.2.7:5070?x=@192.0.2.7":      false,
		}
		for uri, w := range want {
			if asWritten[uri] != w {
				t.Errorf("%s: used as written %v, want %v", uri, asWritten[uri], w)
			}
		}
	})
}
