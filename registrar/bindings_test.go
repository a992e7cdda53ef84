package registrar_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

func newBindings(t *testing.T, db *storage.DB, policy registrar.Policy) (*registrar.Bindings, func()) {
	t.Helper()
	b := registrar.NewBindings(db.BindingStore(), policy, slog.New(slog.DiscardHandler))
	if _, err := b.Load(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.Run(ctx) }()
	return b, func() { cancel(); <-done }
}

func contact(uri string, expires int) registrar.ContactRequest {
	return registrar.ContactRequest{URI: uri, Expires: expires}
}

func reg(callID string, cseq uint32, expires int, contacts ...registrar.ContactRequest) registrar.RegisterRequest {
	return registrar.RegisterRequest{AOR: "alice", CallID: callID, CSeq: cseq, Contacts: contacts, Expires: expires,
		Transport: "UDP", Source: "192.0.2.1:5060"}
}

func uris(bs []registrar.Binding) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.URI)
	}
	return out
}

func TestRegisterSemantics(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		p := registrar.DefaultPolicy()
		p.MaxContacts = 3
		b, stop := newBindings(t, db, p)

		steps := []struct {
			name string
			req  registrar.RegisterRequest
			err  error
			want []string
		}{
			{"first contact", reg("c1", 1, -1, contact("sip:a@192.0.2.1", -1)), nil, []string{"sip:a@192.0.2.1"}},
			{"query without contacts", reg("c9", 1, -1), nil, []string{"sip:a@192.0.2.1"}},
			{"second contact, parameter expiry", reg("c2", 1, -1, contact("sip:a@192.0.2.2", 300)), nil, []string{"sip:a@192.0.2.1", "sip:a@192.0.2.2"}},
			{"replayed CSeq", reg("c1", 1, -1, contact("sip:a@192.0.2.1", -1)), registrar.ErrOutOfOrder, nil},
			{"lower CSeq", reg("c2", 0, -1, contact("sip:a@192.0.2.2", 300)), registrar.ErrOutOfOrder, nil},
			{"too brief", reg("c3", 1, 30, contact("sip:a@192.0.2.3", -1)), registrar.ErrIntervalTooBrief, nil},
			{"zero parameter beats header", reg("c2", 2, 3600, contact("sip:a@192.0.2.2", 0)), nil, []string{"sip:a@192.0.2.1"}},
			{"wildcard with expiry", registrar.RegisterRequest{AOR: "alice", CallID: "c5", CSeq: 1, Wildcard: true, Expires: 60}, registrar.ErrBadWildcard, nil},
			{"fill to the limit", reg("c6", 1, -1, contact("sip:a@192.0.2.6", -1), contact("sip:a@192.0.2.7", -1)), nil,
				[]string{"sip:a@192.0.2.1", "sip:a@192.0.2.6", "sip:a@192.0.2.7"}},
			{"oldest gives way", reg("c8", 1, -1, contact("sip:a@192.0.2.8", -1)), nil,
				[]string{"sip:a@192.0.2.6", "sip:a@192.0.2.7", "sip:a@192.0.2.8"}},
			{"wildcard removes all", registrar.RegisterRequest{AOR: "alice", CallID: "c9", CSeq: 2, Wildcard: true, Expires: 0}, nil, nil},
		}
		for _, s := range steps {
			time.Sleep(2 * time.Millisecond) // distinct update times for "oldest"
			res, err := b.Register(ctx, s.req)
			if !errors.Is(err, s.err) {
				t.Fatalf("%s: err %v, want %v", s.name, err, s.err)
			}
			if err != nil {
				continue
			}
			got := uris(res.Bindings)
			if len(got) != len(s.want) {
				t.Fatalf("%s: bindings %v, want %v", s.name, got, s.want)
			}
			for i := range got {
				if got[i] != s.want[i] {
					t.Fatalf("%s: bindings %v, want %v", s.name, got, s.want)
				}
			}
		}
		// Expiry is clamped to the maximum.
		res, _ := b.Register(ctx, reg("c10", 1, 999999, contact("sip:a@192.0.2.10", -1)))
		if d := time.Until(res.Bindings[0].Expires); d > p.MaxExpires || d < p.MaxExpires-time.Minute {
			t.Fatalf("expiry %v, want about %v", d, p.MaxExpires)
		}
		stop()

		// The same device (instance, reg-id) replaces its old binding even
		// with a new Contact; a restart keeps bindings.
		p.RejectOverflow = true
		b, stop = newBindings(t, db, p)
		defer stop()
		if got := b.Lookup("alice"); len(got) != 1 || got[0].URI != "sip:a@192.0.2.10" {
			t.Fatalf("after restart: %v", uris(got))
		}
		dev := func(uri string) registrar.ContactRequest {
			return registrar.ContactRequest{URI: uri, Expires: -1, Instance: "<urn:uuid:00000000-0000-0000-0000-000000000001>", RegID: 1}
		}
		b.Register(ctx, reg("d1", 1, -1, dev("sip:a@198.51.100.1:1111")))
		res, err := b.Register(ctx, reg("d2", 1, -1, dev("sip:a@198.51.100.1:2222")))
		if err != nil || len(res.Bindings) != 2 || res.Bindings[1].URI != "sip:a@198.51.100.1:2222" {
			t.Fatalf("instance replace: %v, %v", uris(res.Bindings), err)
		}
		b.Register(ctx, reg("d3", 1, -1, contact("sip:a@192.0.2.11", -1)))
		if _, err := b.Register(ctx, reg("d4", 1, -1, contact("sip:a@192.0.2.12", -1))); !errors.Is(err, registrar.ErrTooManyContacts) {
			t.Fatalf("over the limit with the reject policy: %v", err)
		}
		if bd, ok := b.LookupURI("sip:a@198.51.100.1:2222"); !ok || bd.AOR != "alice" {
			t.Fatalf("LookupURI = %+v, %v", bd, ok)
		}
		if _, ok := b.LookupURI("sip:a@198.51.100.1:1111"); ok {
			t.Fatal("LookupURI found the replaced contact")
		}
	})
}

func TestFlowsAndReachability(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		db := testkit.Open(t, engine)
		b, stop := newBindings(t, db, registrar.DefaultPolicy())
		ctx := context.Background()
		// Changed is what sipserver acts on: the member may have become
		// reachable, so pending deliveries go.
		var reachable []string
		register := func(r registrar.RegisterRequest) {
			t.Helper()
			res, err := b.Register(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if res.Changed {
				reachable = append(reachable, r.AOR)
			}
		}
		tcp := registrar.RegisterRequest{AOR: "bob", CallID: "x", CSeq: 1, Contacts: []registrar.ContactRequest{contact("sip:bob@h.invalid;transport=ws", -1)},
			Expires: -1, Transport: "WS", Source: "203.0.113.5:40000"}
		register(tcp)
		tcp.CSeq = 2
		register(tcp) // a refresh of the same flow
		if len(reachable) != 1 {
			t.Fatalf("changed registrations = %v, want one (the refresh changes nothing)", reachable)
		}
		if got := b.Lookup("bob"); len(got) != 1 || got[0].Source != "203.0.113.5:40000" || got[0].Transport != "WS" {
			t.Fatalf("lookup = %+v", got)
		}
		b.FlowClosed("WS", "203.0.113.5:40000")
		if got := b.Lookup("bob"); len(got) != 0 {
			t.Fatalf("after the flow closed: %+v", got)
		}
		if by, aors := b.Stats(); aors != 0 || by["WS"] != 0 {
			t.Fatalf("stats after close: %v %d", by, aors)
		}
		// Registering again over a new connection makes it reachable.
		tcp.CSeq, tcp.Source = 3, "203.0.113.5:40001"
		register(tcp)
		if got := b.Lookup("bob"); len(got) != 1 || len(reachable) != 2 {
			t.Fatalf("after re-register: %+v, changed registrations %v", got, reachable)
		}
		stop()
		// After a restart, a connection-held binding of this node is unreachable
		// (the connection died with the process); UDP ones stay reachable.
		b2, stop2 := newBindings(t, db, registrar.DefaultPolicy())
		defer stop2()
		if got := b2.Lookup("bob"); len(got) != 0 {
			t.Fatalf("WS binding reachable after restart: %+v", got)
		}
	})
}

// A refresh that only moves the expiry is written later, once, as the
// binding then is; stopping writes what is left; a binding removed after
// its refresh is not written back.
func TestRefreshWrittenBehind(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		db := testkit.Open(t, engine)
		stored := func(aor string) []registrar.Binding {
			t.Helper()
			all, err := db.BindingStore().LoadBindings(ctx, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			var out []registrar.Binding
			for _, bd := range all {
				if bd.AOR == aor {
					out = append(out, bd)
				}
			}
			return out
		}
		p := registrar.DefaultPolicy()
		p.RefreshWrite = time.Hour // only stopping writes
		b, stop := newBindings(t, db, p)
		first, err := b.Register(ctx, reg("c1", 1, 600, contact("sip:a@192.0.2.1", -1)))
		if err != nil {
			t.Fatal(err)
		}
		if got := stored("alice"); len(got) != 1 || !got[0].Expires.Equal(first.Bindings[0].Expires.Truncate(time.Microsecond)) {
			t.Fatalf("a new binding is committed before the answer: stored %+v", got)
		}
		var last registrar.RegisterResult
		for cseq := uint32(2); cseq <= 4; cseq++ {
			time.Sleep(2 * time.Millisecond)
			if last, err = b.Register(ctx, reg("c1", cseq, 3600, contact("sip:a@192.0.2.1", -1))); err != nil {
				t.Fatal(err)
			}
		}
		if got := stored("alice"); len(got) != 1 || got[0].CSeq != 1 {
			t.Fatalf("refreshes written at once: stored %+v", got)
		}
		// bob refreshes, then removes his binding: nothing comes back.
		bob := registrar.RegisterRequest{AOR: "bob", CallID: "b", CSeq: 1, Contacts: []registrar.ContactRequest{contact("sip:b@192.0.2.2", -1)},
			Expires: 600, Transport: "UDP", Source: "192.0.2.2:5060"}
		for cseq, exp := range []int{600, 3600, 0} {
			bob.CSeq, bob.Expires = uint32(cseq+1), exp
			if _, err := b.Register(ctx, bob); err != nil {
				t.Fatal(err)
			}
		}
		stop()
		if _, err := b.Register(ctx, reg("c1", 9, 3600, contact("sip:a@192.0.2.1", -1))); err == nil {
			t.Fatal("a refresh after the registrar stopped was taken and would never be written")
		}
		got := stored("alice")
		if len(got) != 1 || got[0].CSeq != 4 || !got[0].Expires.Equal(last.Bindings[0].Expires.Truncate(time.Microsecond)) {
			t.Fatalf("after stop: stored %+v, want CSeq 4 expiring %v", got, last.Bindings[0].Expires)
		}
		if got := stored("bob"); len(got) != 0 {
			t.Fatalf("a removed binding was written back: %+v", got)
		}

		// With a short delay the refresh lands without a stop.
		p.RefreshWrite = 20 * time.Millisecond
		b, stop = newBindings(t, db, p)
		defer stop()
		if _, err := b.Register(ctx, reg("c1", 5, 3000, contact("sip:a@192.0.2.1", -1))); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for got := stored("alice"); len(got) != 1 || got[0].CSeq != 5; got = stored("alice") {
			if time.Now().After(deadline) {
				t.Fatalf("refresh never written: %+v", got)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// A device registered with push parameters (RFC 8599) is known by its push
// address: registering again from another port replaces its binding, as
// +sip.instance does. A device marked asleep stays listed until it
// registers again, and that registration, even from the same flow, counts
// as a change: what waits for it is to be sent now.
func TestPushDevices(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		db := testkit.Open(t, engine)
		b, stop := newBindings(t, db, registrar.DefaultPolicy())
		defer stop()
		ctx := context.Background()
		push := registrar.Push{Provider: "apns", PRID: "token-1", Param: "TEAM.org.example.app"}
		phone := func(cseq uint32, port string) registrar.RegisterRequest {
			c := contact("sip:bob@192.0.2.7:"+port+";pn-provider=apns;pn-prid=token-1", -1)
			c.Push = push
			return registrar.RegisterRequest{AOR: "bob", CallID: "p", CSeq: cseq, Contacts: []registrar.ContactRequest{c},
				Expires: -1, Transport: "UDP", Source: "192.0.2.7:" + port}
		}
		register := func(r registrar.RegisterRequest) registrar.RegisterResult {
			t.Helper()
			res, err := b.Register(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		register(phone(1, "5060"))
		moved := register(phone(2, "5062"))
		if len(moved.Bindings) != 1 || moved.Bindings[0].Source != "192.0.2.7:5062" || moved.Bindings[0].Push != push || !moved.Changed {
			t.Fatalf("after registering from a new port: %+v, want the one binding moved", moved)
		}
		if refresh := register(phone(3, "5062")); refresh.Changed {
			t.Fatalf("a refresh of an awake device changed %+v", refresh)
		}
		bd := b.Lookup("bob")[0]
		if b.MarkAsleep("bob", bd.Key(), bd.Updated.Add(-time.Second)) {
			t.Fatal("marked a binding registered again since")
		}
		if !b.MarkAsleep("bob", bd.Key(), bd.Updated) {
			t.Fatal("MarkAsleep refused the current binding")
		}
		if got := b.Lookup("bob"); len(got) != 1 || !got[0].Asleep {
			t.Fatalf("lookup after MarkAsleep: %+v, want the binding, asleep", got)
		}
		if woke := register(phone(4, "5062")); !woke.Changed || woke.Bindings[0].Asleep {
			t.Fatalf("the asleep device registered again: %+v, want a change and no mark", woke)
		}
		// Unreachable bindings are left out of Lookup, not of LookupAll.
		tcp := registrar.RegisterRequest{AOR: "bob", CallID: "t", CSeq: 1, Contacts: []registrar.ContactRequest{contact("sip:bob@b.invalid;transport=tcp", -1)},
			Expires: -1, Transport: "TCP", Source: "192.0.2.7:40000"}
		tcp.Contacts[0].Push = registrar.Push{Provider: "fcm", PRID: "token-2"}
		register(tcp)
		b.FlowClosed("TCP", "192.0.2.7:40000")
		if got, all := b.Lookup("bob"), b.LookupAll("bob"); len(got) != 1 || len(all) != 2 {
			t.Fatalf("Lookup %+v, LookupAll %+v: want 1 and 2", got, all)
		}
		// Unregistering the device removes it.
		bye := phone(5, "5062")
		bye.Contacts[0].Expires = 0
		if res := register(bye); len(res.Bindings) != 1 || res.Bindings[0].Transport != "TCP" {
			t.Fatalf("after unregistering: %+v", res.Bindings)
		}
	})
}
