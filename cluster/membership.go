// Package cluster keeps this process's place among the gchd nodes that
// share one database: a named row with a lease, renewed about every
// second by the database's clock, and an epoch that changes at every
// start. The database is the only truth; a node that cannot renew its
// lease fences itself (it stops delivering and refuses registrations)
// before any other node can consider it gone, so two nodes never both act
// for the same flows.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Node is one member as the database knows it.
type Node struct {
	Name    string
	Epoch   int64
	Address string // host:port of its SIP listeners
}

// Renewal is what renewing a lease found.
type Renewal int

const (
	Renewed   Renewal = iota // the lease runs on
	Lapsed                   // the lease had run out: rejoin under a new epoch
	Displaced                // another process holds the name now
)

// Store keeps the node rows. storage implements it.
type Store interface {
	// JoinNode takes the row of name with a fresh epoch and a lease of
	// the given length. It fails with *NameHeldError while another
	// process's lease on the name runs, and, when exclusive, with
	// *OtherNodeError while any other node's lease runs.
	JoinNode(ctx context.Context, name, address string, lease time.Duration, exclusive bool) (Node, error)
	// RenewNode extends the lease of name at epoch, if it still runs.
	RenewNode(ctx context.Context, name string, epoch int64, lease time.Duration) (Renewal, error)
	// LiveNodes lists the nodes whose lease runs.
	LiveNodes(ctx context.Context) ([]Node, error)
	// LeaveNode ends the lease of name at epoch at once.
	LeaveNode(ctx context.Context, name string, epoch int64) error
}

// NameHeldError says a live process holds the node name.
type NameHeldError struct {
	Name      string
	Remaining time.Duration // until its lease runs out, unless renewed
}

func (e *NameHeldError) Error() string {
	return fmt.Sprintf("node name %q is held by another gchd process (its lease runs for %v more)", e.Name, e.Remaining.Round(time.Millisecond))
}

// OtherNodeError says another node is live on a database that is for one
// node only.
type OtherNodeError struct{ Other string }

func (e *OtherNodeError) Error() string {
	return fmt.Sprintf("node %q is live on this database", e.Other)
}

// Options configure a Membership.
type Options struct {
	Name    string // unique among the nodes
	Address string // host:port other nodes and phones reach this node's SIP at
	// Lease is how long a renewal holds the row; Renew how often it is
	// renewed. Other nodes consider this one gone Lease after its last
	// renewal.
	Lease, Renew time.Duration
	// Exclusive refuses to join while another node is live, and never
	// fences: a single-node database (SQLite) has no one to hand work to,
	// so a slow renewal there must not become an outage.
	Exclusive bool
	// Setting names the configuration setting of Name, for messages.
	Setting string
	Log     *slog.Logger
	// Observe, when set, is told the outcome of every renewal.
	Observe func(outcome string)
}

// Membership is this process's row among the nodes.
type Membership struct {
	store Store
	opts  Options
	log   *slog.Logger

	epoch     atomic.Int64
	renewedAt atomic.Int64 // unix nanoseconds when the last successful renewal was sent
	displaced atomic.Bool
	fenced    atomic.Bool // as last reported, for the transition logs

	mu   sync.Mutex
	live []Node
}

// Join takes this node's row. A name held by a process that died keeps
// its lease until it runs out: Join waits for that once, and refuses the
// name if the lease was renewed meanwhile, since a live process holds it.
func Join(ctx context.Context, store Store, opts Options) (*Membership, error) {
	if opts.Lease <= 0 {
		opts.Lease = 4 * time.Second
	}
	if opts.Renew <= 0 || opts.Renew >= opts.Lease {
		opts.Renew = opts.Lease / 4
	}
	if opts.Setting == "" {
		opts.Setting = "registrar.node"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	m := &Membership{store: store, opts: opts, log: opts.Log}
	for attempt := 0; ; attempt++ {
		sent := time.Now()
		n, err := store.JoinNode(ctx, opts.Name, opts.Address, opts.Lease, opts.Exclusive)
		var held *NameHeldError
		var other *OtherNodeError
		switch {
		case err == nil:
			m.epoch.Store(n.Epoch)
			m.renewedAt.Store(sent.UnixNano())
			m.refreshLive(ctx)
			m.log.Info("joined the nodes", "node", opts.Name, "epoch", n.Epoch, "address", opts.Address, "live", len(m.Live()))
			return m, nil
		case errors.As(err, &other):
			return nil, fmt.Errorf("%w: a SQLite database is for one gchd node; use PostgreSQL to run several", err)
		case errors.As(err, &held) && attempt == 0 && held.Remaining <= opts.Lease:
			// A process killed a moment ago leaves its lease behind.
			m.log.Info("node name still leased; waiting for the lease to run out", "node", opts.Name, "remaining", held.Remaining)
			select {
			case <-time.After(held.Remaining + opts.Renew/2):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case errors.As(err, &held):
			return nil, fmt.Errorf("%w: another live gchd uses this name; give every node its own %s", err, opts.Setting)
		default:
			return nil, fmt.Errorf("join the nodes as %q: %w", opts.Name, err)
		}
	}
}

// Name returns this node's name.
func (m *Membership) Name() string { return m.opts.Name }

// Epoch returns this node's current epoch.
func (m *Membership) Epoch() int64 { return m.epoch.Load() }

// Fenced reports whether this node must hold back: its lease may have run
// out in the eyes of the other nodes. It is decided by this process's
// monotonic clock, so a process that was frozen knows it at once when it
// wakes, before any renewal answers.
func (m *Membership) Fenced() bool {
	if m.displaced.Load() {
		return true
	}
	if m.opts.Exclusive {
		return false
	}
	since := time.Since(time.Unix(0, m.renewedAt.Load()))
	// The row's lease runs Lease from the database's clock at the
	// renewal, which is after the renewal was sent: fencing half a renewal
	// interval early leaves margin for clock rates.
	return since >= m.opts.Lease-m.opts.Renew/2
}

// Live returns the live nodes as last read, this one included.
func (m *Membership) Live() []Node {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Node(nil), m.live...)
}

// Peer returns the live node of that name as last read.
func (m *Membership) Peer(name string) (Node, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.live {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// RetryAfter is what a client refused while fenced should wait.
func (m *Membership) RetryAfter() time.Duration { return m.opts.Lease }

// Run renews the lease until ctx is done, then leaves: the row's lease
// ends at once, so other nodes need not wait it out.
func (m *Membership) Run(ctx context.Context) {
	t := time.NewTicker(m.opts.Renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.Leave()
			return
		case <-t.C:
		}
		m.renew(ctx)
	}
}

func (m *Membership) renew(ctx context.Context) {
	if m.displaced.Load() {
		return
	}
	// A process woken from a freeze logs its fence before renewing.
	m.reportFence()
	rctx, cancel := context.WithTimeout(ctx, m.opts.Lease)
	defer cancel()
	sent := time.Now()
	epoch := m.epoch.Load()
	r, err := m.store.RenewNode(rctx, m.opts.Name, epoch, m.opts.Lease)
	switch {
	case err != nil:
		m.observe("failed")
		m.log.Warn("node lease not renewed", "node", m.opts.Name, "epoch", epoch, "err", err)
	case r == Renewed:
		m.observe("renewed")
		m.renewedAt.Store(sent.UnixNano())
		m.refreshLive(rctx)
	case r == Lapsed:
		// Others have seen this node gone; what it did under the old
		// epoch is theirs to take over. Rejoin as a new epoch.
		m.observe("lapsed")
		n, err := m.store.JoinNode(rctx, m.opts.Name, m.opts.Address, m.opts.Lease, m.opts.Exclusive)
		if err != nil {
			m.log.Warn("node lease lapsed and rejoining failed", "node", m.opts.Name, "err", err)
			break
		}
		m.epoch.Store(n.Epoch)
		m.renewedAt.Store(sent.UnixNano())
		m.log.Warn("node lease had lapsed: rejoined under a new epoch", "node", m.opts.Name, "old_epoch", epoch, "epoch", n.Epoch)
		m.refreshLive(rctx)
	case r == Displaced:
		m.observe("displaced")
		m.displaced.Store(true)
		m.log.Error("another gchd process took this node's name while its lease had lapsed: this process stays fenced; stop it",
			"node", m.opts.Name, "setting", m.opts.Setting)
	}
	m.reportFence()
}

// reportFence logs the changes of the fenced state.
func (m *Membership) reportFence() {
	now := m.Fenced()
	if m.fenced.Swap(now) == now {
		return
	}
	if now {
		m.log.Error("node fenced: its lease may have lapsed; no deliveries, REGISTER answered 503, until it is renewed", "node", m.opts.Name)
	} else {
		m.log.Info("node lease renewed: fence lifted", "node", m.opts.Name, "epoch", m.epoch.Load())
	}
}

func (m *Membership) refreshLive(ctx context.Context) {
	live, err := m.store.LiveNodes(ctx)
	if err != nil {
		return
	}
	m.mu.Lock()
	m.live = live
	m.mu.Unlock()
}

// Leave ends the lease at once, for a process that stops. Run leaves when
// it ends; a process that joined and never ran calls Leave itself.
func (m *Membership) Leave() {
	if m.displaced.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.Lease)
	defer cancel()
	if err := m.store.LeaveNode(ctx, m.opts.Name, m.epoch.Load()); err != nil {
		m.log.Warn("node lease not ended; others see this node gone when it runs out", "node", m.opts.Name, "err", err)
	}
}

func (m *Membership) observe(outcome string) {
	if m.opts.Observe != nil {
		m.opts.Observe(outcome)
	}
}
