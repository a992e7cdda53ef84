package storagetest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"gchd/registrar"
)

// Queued binding changes are committed in batches in the order they were
// queued: a removal queued after a put of the same binding stays removed,
// a later put wins, and changes queued from many goroutines at once are
// all written.
func testQueuedBindingsKeepOrder(t *testing.T, stores Stores) {
	ctx := context.Background()
	s := stores.Bindings
	binding := func(aor string, cseq uint32) registrar.Binding {
		return registrar.Binding{AOR: aor, URI: "sip:" + aor + "@192.0.2.10", Expires: T0.Add(time.Hour), CallID: "c-" + aor, CSeq: cseq,
			Transport: "UDP", Source: "192.0.2.10:5060", Node: "gchd", Updated: T0}
	}
	ref := func(aor string) registrar.BindingRef {
		return registrar.BindingRef{AOR: aor, Key: binding(aor, 0).Key()}
	}
	commits := []registrar.BindingCommit{
		s.QueueBindings([]registrar.Binding{binding("gone", 1)}, nil),
		s.QueueBindings([]registrar.Binding{binding("back", 1)}, nil),
		s.QueueBindings(nil, []registrar.BindingRef{ref("gone"), ref("back")}),
		s.QueueBindings([]registrar.Binding{binding("back", 2), binding("twice", 1)}, nil),
		s.QueueBindings([]registrar.Binding{binding("twice", 2)}, nil),
	}
	for _, c := range commits {
		if err := c.Wait(); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.SaveBindings(ctx, []registrar.Binding{binding(fmt.Sprintf("many%02d", i), 1)}, nil)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.LoadBindings(ctx, T0)
	if err != nil {
		t.Fatal(err)
	}
	cseq := map[string]uint32{}
	for _, bd := range got {
		cseq[bd.AOR] = bd.CSeq
	}
	if _, ok := cseq["gone"]; ok {
		t.Error("a binding removed after its put is stored")
	}
	if cseq["back"] != 2 || cseq["twice"] != 2 {
		t.Errorf("back at CSeq %d, twice at %d; want the last put of each, 2", cseq["back"], cseq["twice"])
	}
	if len(got) != 42 {
		t.Errorf("%d bindings stored, want 42", len(got))
	}
}
