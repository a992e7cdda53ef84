package registrar

import (
	"context"
	"fmt"
	"time"
)

// Several gchd nodes share one database: each holds its own phones' flows
// and knows the others' bindings from the database, read again when a
// node announces a change (Refresh) and all of them now and then
// (Reconcile). A node's own bindings are what its memory says: its
// refreshes reach the database later (RefreshWrite), and no reading of it
// may take them back.

// reachable reports whether a request can be sent to bd now.
func (b *Bindings) reachable(bd Binding, now time.Time) bool {
	return bd.Expires.After(now) && !bd.Unreachable && b.nodeReaches(bd)
}

// nodeReaches reports whether the node that holds bd's flow can use it:
// this node, or a live one, under the same epoch when a connection holds
// the flow.
func (b *Bindings) nodeReaches(bd Binding) bool {
	if b.policy.Peer == nil || bd.Node == b.policy.Node {
		return true
	}
	epoch, _, live := b.policy.Peer(bd.Node)
	return live && (!bd.Reliable() || epoch == bd.Epoch)
}

// Owner names the node that sends login's deliveries: the node holding
// the newest flow among the member's reachable bindings, "" when none is
// reachable. Every node decides alike from the same bindings, so one node
// sends a member's deliveries (to every device, through the nodes of the
// others).
func (b *Bindings) Owner(login string) string {
	now := b.now()
	sh := b.shard(login)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var newest *Binding
	for i, bd := range sh.aors[login] {
		if bd.Asleep || !b.reachable(bd, now) {
			continue
		}
		if newest == nil || bd.Updated.After(newest.Updated) {
			newest = &sh.aors[login][i]
		}
	}
	if newest == nil {
		return ""
	}
	return newest.Node
}

// OnNode lists the AORs with a binding held by node: their owner may
// change when that node goes.
func (b *Bindings) OnNode(node string) []string {
	out, _ := b.OnNodeUpTo(node, -1)
	return out
}

// OnNodeUpTo is OnNode that gives up past limit AORs (a negative limit:
// none), reporting false: a caller with a use only for a short list need
// not walk a million bindings every second.
func (b *Bindings) OnNodeUpTo(node string, limit int) ([]string, bool) {
	var out []string
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for aor, bs := range sh.aors {
			for _, bd := range bs {
				if bd.Node == node {
					out = append(out, aor)
					break
				}
			}
			if limit >= 0 && len(out) > limit {
				sh.mu.RUnlock()
				return nil, false
			}
		}
		sh.mu.RUnlock()
	}
	return out, true
}

// Refresh reads the bindings of aors from the store again: another node
// changed them. It returns the AORs whose bindings held by other nodes
// changed.
func (b *Bindings) Refresh(ctx context.Context, aors []string) ([]string, error) {
	now := b.now()
	list, err := b.store.BindingsOf(ctx, aors, now)
	if err != nil {
		return nil, fmt.Errorf("read bindings of %d AORs: %w", len(aors), err)
	}
	byAOR := make(map[string][]Binding, len(aors))
	for _, a := range aors {
		byAOR[a] = nil
	}
	for _, bd := range list {
		byAOR[bd.AOR] = append(byAOR[bd.AOR], bd)
	}
	return b.merge(byAOR, now), nil
}

// Reconcile reads every stored binding again: after a notification may
// have been lost, and now and then, for the refreshes other nodes write
// behind without a notification. It returns the AORs whose bindings held
// by other nodes changed.
func (b *Bindings) Reconcile(ctx context.Context) ([]string, error) {
	now := b.now()
	list, err := b.store.LoadBindings(ctx, now)
	if err != nil {
		return nil, fmt.Errorf("load bindings: %w", err)
	}
	byAOR := make(map[string][]Binding)
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for aor, bs := range sh.aors {
			for _, bd := range bs {
				if bd.Node != b.policy.Node {
					byAOR[aor] = nil // gone unless the store still has it
					break
				}
			}
		}
		sh.mu.RUnlock()
	}
	for _, bd := range list {
		byAOR[bd.AOR] = append(byAOR[bd.AOR], bd)
	}
	return b.merge(byAOR, now), nil
}

// merge sets each AOR's bindings held by other nodes to what the store
// has. This node's own stay as in memory, unless the store holds the same
// device written later by another node: the phone moved there.
func (b *Bindings) merge(stored map[string][]Binding, now time.Time) (changed []string) {
	for aor, rows := range stored {
		sh := b.shard(aor)
		sh.mu.Lock()
		cur := sh.aors[aor]
		var next []Binding
		for _, bd := range cur {
			if bd.Node != b.policy.Node {
				continue
			}
			if i := indexOf(rows, bd.Key()); i >= 0 && rows[i].Node != b.policy.Node && rows[i].Updated.After(bd.Updated) {
				delete(sh.refreshed, BindingRef{aor, bd.Key()})
				continue
			}
			next = append(next, bd)
		}
		for _, row := range rows {
			if row.Node == b.policy.Node || !row.Expires.After(now) || indexOf(next, row.Key()) >= 0 {
				continue
			}
			if i := indexOf(cur, row.Key()); i >= 0 && cur[i].Node == row.Node && cur[i].Updated.Equal(row.Updated) {
				row.Asleep = cur[i].Asleep // the same registration: keep what this node learnt of it
			}
			next = append(next, row)
		}
		if !sameRemote(cur, next, b.policy.Node) {
			changed = append(changed, aor)
		}
		b.setLocked(sh, aor, next)
		sh.mu.Unlock()
	}
	return changed
}

// sameRemote reports whether two lists hold the same registrations of
// nodes other than self.
func sameRemote(a, b []Binding, self string) bool {
	count := func(bs []Binding) int {
		n := 0
		for _, bd := range bs {
			if bd.Node != self {
				n++
			}
		}
		return n
	}
	if count(a) != count(b) {
		return false
	}
	for _, x := range a {
		if x.Node == self {
			continue
		}
		i := indexOf(b, x.Key())
		if i < 0 || b[i].Node != x.Node || !b[i].Updated.Equal(x.Updated) {
			return false
		}
	}
	return true
}
