package sipserver

import (
	"context"
	"sync"
	"time"

	"gchd/registrar"
)

// bindingTable is a location service holding bindings it was given: the
// proxy's and the sender's tests choose where a user's devices are.
type bindingTable struct {
	mu       sync.Mutex
	node     string
	bindings map[string][]registrar.Binding // by AOR
}

func (r *bindingTable) Register(context.Context, registrar.RegisterRequest) (registrar.RegisterResult, error) {
	return registrar.RegisterResult{}, registrar.ErrUnavailable
}

func (r *bindingTable) Lookup(aor string) []registrar.Binding {
	var out []registrar.Binding
	for _, b := range r.LookupAll(aor) {
		if !b.Unreachable {
			out = append(out, b)
		}
	}
	return out
}

func (r *bindingTable) LookupAll(aor string) []registrar.Binding {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]registrar.Binding(nil), r.bindings[aor]...)
}

func (r *bindingTable) LookupURI(uri string) (registrar.Binding, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, bs := range r.bindings {
		for _, b := range bs {
			if b.URI == uri {
				return b, true
			}
		}
	}
	return registrar.Binding{}, false
}

func (r *bindingTable) MarkAsleep(aor, key string, _ time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, b := range r.bindings[aor] {
		if b.Key() == key {
			r.bindings[aor][i].Asleep = true
			return true
		}
	}
	return false
}

func (r *bindingTable) FlowClosed(string, string) {}

func (r *bindingTable) Policy() registrar.Policy { return registrar.Policy{Node: r.node} }
