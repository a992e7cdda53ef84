package registrar

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Binding is one registered contact of an address-of-record, with the flow
// it registered over: replies and later requests for the contact go back
// over that connection (TCP, TLS, WS) or to that source address (UDP), so a
// phone behind NAT, or a browser whose Contact host is *.invalid, is
// reachable.
type Binding struct {
	AOR       string // the login
	URI       string // the Contact URI as registered
	Instance  string // +sip.instance (RFC 5626), "" if none
	RegID     int    // reg-id (RFC 5626), 0 if none
	Q         string // q parameter as given, "" if none
	Expires   time.Time
	CallID    string
	CSeq      uint32
	Transport string // UDP, TCP, TLS, WS or WSS
	Source    string // ip:port the REGISTER came from
	// NAT is set when the phone is behind a NAT (or a UDP phone whose
	// Contact is not where it sends from): requests go to Source rather
	// than to the Contact's address.
	NAT       bool
	Node      string // the gchd node that holds the flow
	Epoch     int64  // that node's epoch when the binding was written
	UserAgent string
	Updated   time.Time
	// Unreachable is set when the flow closed: the contact stays listed
	// until it expires or re-registers, but nothing is sent to it.
	Unreachable bool
	// Push is how the device is woken when it sleeps (RFC 8599); zero
	// when it registered without push parameters.
	Push Push
	// Asleep is set when a device with Push let a request go unanswered:
	// it was sent a push and is written to again once it registers again
	// (which replaces the binding, and the mark with it). Kept in memory
	// only: after a restart the device is tried once more.
	Asleep bool
}

// Push is a device's push notification service (RFC 8599 section 4): its
// pn-provider, pn-prid and pn-param, as the phone wrote them.
type Push struct {
	Provider string
	PRID     string
	Param    string
}

// Enabled reports whether the device can be woken: it named its push
// service and its address there. A pn-provider alone is a query of what
// the server supports (RFC 8599), no request for pushes.
func (p Push) Enabled() bool { return p.Provider != "" && p.PRID != "" }

// Key identifies a binding within its AOR: the device instance when the
// phone gave one (so a new registration of the same device replaces the old
// one), else its push address (RFC 8599: the same pn-prid is the same
// device, whatever port it registers from now), else the Contact URI.
func (b Binding) Key() string {
	if b.Instance != "" {
		return "i:" + b.Instance + "#" + strconv.Itoa(b.RegID)
	}
	if b.Push.Enabled() {
		return "p:" + b.Push.Provider + " " + b.Push.PRID
	}
	return "c:" + b.URI
}

// Reliable reports whether the binding's flow is a connection.
func (b Binding) Reliable() bool { return b.Transport != "UDP" }

// sameFlow reports whether nb changes nothing but the expiry and the
// Call-ID/CSeq bookkeeping of b: such a refresh need not wait for the disk.
func (b Binding) sameFlow(nb Binding) bool {
	return b.URI == nb.URI && b.Instance == nb.Instance && b.RegID == nb.RegID && b.Q == nb.Q &&
		b.Transport == nb.Transport && b.Source == nb.Source && b.NAT == nb.NAT && b.Node == nb.Node && b.Epoch == nb.Epoch &&
		b.UserAgent == nb.UserAgent && b.Push == nb.Push && !b.Unreachable && !b.Asleep
}

// BindingStore keeps bindings durable.
type BindingStore interface {
	// LoadBindings returns every binding that expires after now.
	LoadBindings(ctx context.Context, now time.Time) ([]Binding, error)
	// QueueBindings queues new or changed bindings and removals of others
	// behind every change queued before, and returns the change to wait
	// for. The store commits queued changes in batches, applying them in
	// the order they were queued: a later change of a binding supersedes
	// an earlier one.
	QueueBindings(put []Binding, del []BindingRef) BindingCommit
	// SaveBindings queues a change and waits for it.
	SaveBindings(ctx context.Context, put []Binding, del []BindingRef) error
	// DeleteExpiredBindings removes the bindings of node that expired
	// before t, and those of nodes that hold no lease (once for the
	// cluster: a node that finds another doing it skips that part).
	DeleteExpiredBindings(ctx context.Context, node string, t time.Time) (int, error)
	// BindingsOf returns the stored bindings of aors that expire after
	// now, whichever node wrote them.
	BindingsOf(ctx context.Context, aors []string, now time.Time) ([]Binding, error)
	// BindingRemovals lists the bindings an operator removed from the
	// store lately (gchd registrations del), which a running registrar
	// still holds in memory.
	BindingRemovals(ctx context.Context) ([]BindingRemoval, error)
}

// BindingCommit is a queued change of bindings. Wait returns once it is
// committed, with its batch's error. Every queued change must be waited
// for: the first in line commits the batch that takes the ones behind it.
type BindingCommit interface{ Wait() error }

// BindingRemoval is a binding an operator removed, and when.
type BindingRemoval struct {
	BindingRef
	At time.Time
}

// RemovalPoll is how often a running registrar reads the operator's
// removals: a binding removed with gchd registrations del is no longer
// used within about this long.
const RemovalPoll = time.Second

// BindingRef names a binding.
type BindingRef struct {
	AOR string
	Key string
}

// Policy is the registrar's configuration.
type Policy struct {
	MinExpires     time.Duration // shorter non-zero requests get 423
	MaxExpires     time.Duration // longer ones are shortened
	DefaultExpires time.Duration // when the phone names none
	MaxContacts    int           // per AOR
	// RejectOverflow answers 403 when an AOR has MaxContacts bindings
	// already; otherwise the oldest binding gives way.
	RejectOverflow bool
	// Node names this gchd process among those sharing a database.
	Node string
	// Epoch, when set, is this node's current epoch: bindings record it.
	Epoch func() int64
	// Peer, when set, tells which nodes hold their lease: another
	// node's binding is reachable only while that node is live, and, when
	// a connection holds it, under the epoch that wrote it (the
	// connection died with the process before). It returns the node's
	// epoch and SIP address (host:port). Nil on a database that is for
	// one node: every binding is this node's to reach.
	Peer func(name string) (epoch int64, address string, live bool)
	// Fenced, when set, reports that this node has lost its place among
	// the nodes (cluster.Membership): it registers nothing until it is
	// back, since another node may already act for its flows.
	Fenced func() bool
	// RefreshWrite bounds how long a refresh that only moves a binding's
	// expiry waits to be written; the binding's state is written once
	// then, however often it was refreshed meanwhile. 0 writes each
	// refresh (behind the answer, batched with those refreshed meanwhile).
	RefreshWrite time.Duration
}

// DefaultPolicy is what a phone expects of a registrar.
func DefaultPolicy() Policy {
	return Policy{
		MinExpires:     60 * time.Second,
		MaxExpires:     2 * time.Hour,
		DefaultExpires: time.Hour,
		MaxContacts:    10,
		Node:           "gchd",
		RefreshWrite:   5 * time.Second,
	}
}

// Register errors. sipserver maps each to its response.
var (
	// ErrIntervalTooBrief: 423, with Min-Expires; Register returns it as
	// an *IntervalTooBrief that carries the minimum.
	ErrIntervalTooBrief = errors.New("interval too brief")
	// ErrOutOfOrder: 400, a CSeq not above the binding's for the same Call-ID.
	ErrOutOfOrder = errors.New("invalid CSeq number")
	// ErrBadWildcard: 400, "*" with other contacts or a non-zero Expires.
	ErrBadWildcard = errors.New("wildcard contact needs Expires: 0 and no other contact")
	// ErrTooManyContacts: 403 under the reject policy.
	ErrTooManyContacts = errors.New("too many registered contacts")
)

// ContactRequest is one Contact of a REGISTER.
type ContactRequest struct {
	URI      string
	Expires  int // the expires parameter; -1 when absent
	Instance string
	RegID    int
	Q        string
	NAT      bool // reach it at the REGISTER's source, not at the URI
	Push     Push
}

// RegisterRequest is a REGISTER reduced to what RFC 3261 section 10.3 needs.
type RegisterRequest struct {
	AOR       string
	CallID    string
	CSeq      uint32
	Contacts  []ContactRequest
	Wildcard  bool // Contact: *
	Expires   int  // the Expires header; -1 when absent
	Transport string
	Source    string
	UserAgent string
}

// RegisterResult is the answer to a REGISTER.
type RegisterResult struct {
	Bindings []Binding // every current binding of the AOR
	// Changed is set when a binding was added or its flow changed: the
	// member may have become reachable, so pending deliveries should go.
	Changed bool
}

// Bindings is the location service: every AOR's bindings in memory, kept
// durable in a BindingStore. New and changed bindings are committed before
// the REGISTER is answered (the store batches them); refreshes that only
// move the expiry are written behind.
type Bindings struct {
	store  BindingStore
	policy Policy
	log    *slog.Logger
	now    func() time.Time

	seed   maphash.Seed
	shards [64]shard

	// flush asks Run to write the refreshed bindings now (RefreshWrite 0).
	flush chan struct{}
	// closing is set before the last write of refreshes: a refresh after
	// it is written like a change, and refused once Run returned.
	closing atomic.Bool
	stopped atomic.Bool
}

type shard struct {
	mu   sync.RWMutex
	aors map[string][]Binding
	// byURI finds the binding of a Contact URI, for in-dialog requests
	// whose Request-URI is a registered contact.
	byURI map[string]BindingRef
	// refreshed names bindings whose expiry moved since they were last
	// written; writeRefreshed writes them as they are then.
	refreshed map[BindingRef]struct{}
}

// NewBindings returns an empty location service; Load fills it and Run
// writes its refreshes and expires it.
func NewBindings(store BindingStore, policy Policy, log *slog.Logger) *Bindings {
	b := &Bindings{store: store, policy: policy, log: log, now: time.Now, seed: maphash.MakeSeed(),
		flush: make(chan struct{}, 1)}
	for i := range b.shards {
		b.shards[i].aors = map[string][]Binding{}
		b.shards[i].byURI = map[string]BindingRef{}
		b.shards[i].refreshed = map[BindingRef]struct{}{}
	}
	return b
}

// Policy returns the registrar policy.
func (b *Bindings) Policy() Policy { return b.policy }

func (b *Bindings) shard(aor string) *shard {
	return &b.shards[maphash.String(b.seed, aor)%uint64(len(b.shards))]
}

// Load reads the stored bindings into memory. Bindings held by this node
// come back unreachable when their flow was a connection: that connection
// died with the previous process. An AOR stored with more than
// MaxContacts bindings (written by an older version, or the limit was
// lowered) keeps its newest ones; the others are deleted, so that a
// restart never brings back more than the limit. Load runs before Run.
func (b *Bindings) Load(ctx context.Context) (int, error) {
	list, err := b.store.LoadBindings(ctx, b.now())
	if err != nil {
		return 0, fmt.Errorf("load bindings: %w", err)
	}
	byAOR := make(map[string][]Binding)
	for _, bd := range list {
		if bd.Node == b.policy.Node && bd.Reliable() {
			bd.Unreachable = true
		}
		if !bd.NAT && !bd.Reliable() && !contactIsSource(bd.URI, bd.Source) {
			// Stored by a version that also used a name or another
			// address as written: reached through its flow until the
			// phone registers again and the rule of the day decides.
			bd.NAT = true
		}
		byAOR[bd.AOR] = append(byAOR[bd.AOR], bd)
	}
	var extra []BindingRef
	n := 0
	for aor, bs := range byAOR {
		if len(bs) > b.policy.MaxContacts {
			sort.SliceStable(bs, func(i, j int) bool { return bs[i].Updated.After(bs[j].Updated) })
			for _, bd := range bs[b.policy.MaxContacts:] {
				extra = append(extra, BindingRef{aor, bd.Key()})
			}
			bs = bs[:b.policy.MaxContacts]
		}
		sh := b.shard(aor)
		sh.mu.Lock()
		b.setLocked(sh, aor, bs)
		sh.mu.Unlock()
		n += len(bs)
	}
	if len(extra) > 0 {
		if err := b.store.SaveBindings(ctx, nil, extra); err != nil {
			return 0, fmt.Errorf("delete bindings over the limit: %w", err)
		}
		b.log.Warn("deleted stored bindings over registrar.max_contacts", "count", len(extra), "max_contacts", b.policy.MaxContacts)
	}
	return n, nil
}

// Register applies a REGISTER (RFC 3261 section 10.3 steps 6 to 8) and
// returns the AOR's bindings once the change is durable.
func (b *Bindings) Register(ctx context.Context, r RegisterRequest) (RegisterResult, error) {
	if b.policy.Fenced != nil && b.policy.Fenced() {
		return RegisterResult{}, fmt.Errorf("%w: this node is fenced until it renews its lease", ErrUnavailable)
	}
	now := b.now()
	var epoch int64
	if b.policy.Epoch != nil {
		epoch = b.policy.Epoch()
	}
	if r.Wildcard {
		if len(r.Contacts) > 0 || r.Expires != 0 {
			return RegisterResult{}, ErrBadWildcard
		}
	}
	// Validate every contact's expiry before changing anything.
	type wanted struct {
		bd     Binding
		expiry time.Duration
	}
	var want []wanted
	for _, c := range r.Contacts {
		exp := c.Expires
		if exp < 0 {
			exp = r.Expires
		}
		d := time.Duration(exp) * time.Second
		if exp < 0 {
			d = b.policy.DefaultExpires
		}
		if d > 0 && d < b.policy.MinExpires {
			return RegisterResult{}, &IntervalTooBrief{MinExpires: b.policy.MinExpires}
		}
		d = min(d, b.policy.MaxExpires)
		want = append(want, wanted{expiry: d, bd: Binding{
			AOR: r.AOR, URI: c.URI, Instance: c.Instance, RegID: c.RegID, Q: c.Q,
			Expires: now.Add(d), CallID: r.CallID, CSeq: r.CSeq, Transport: r.Transport, Source: r.Source, NAT: c.NAT,
			Node: b.policy.Node, Epoch: epoch, UserAgent: r.UserAgent, Updated: now, Push: c.Push,
		}})
	}

	sh := b.shard(r.AOR)
	sh.mu.Lock()
	before := live(sh.aors[r.AOR], now)
	cur := append([]Binding(nil), before...)
	// written: the keys this request adds or refreshes; they never give
	// way to each other.
	written := make(map[string]bool, len(want))
	changed, sync := false, false
	if r.Wildcard {
		for _, old := range cur {
			if r.CallID == old.CallID && r.CSeq <= old.CSeq {
				sh.mu.Unlock()
				return RegisterResult{}, ErrOutOfOrder
			}
		}
		cur, sync = nil, len(before) > 0
	}
	for _, w := range want {
		key := w.bd.Key()
		i := indexOf(cur, key)
		if i >= 0 {
			old := cur[i]
			if old.CallID == r.CallID && r.CSeq <= old.CSeq {
				sh.mu.Unlock()
				return RegisterResult{}, ErrOutOfOrder
			}
			if w.expiry == 0 {
				cur = append(cur[:i:i], cur[i+1:]...)
				delete(written, key)
				sync = true
				continue
			}
			if !old.sameFlow(w.bd) {
				changed, sync = true, true
			}
			cur[i] = w.bd
			written[key] = true
			continue
		}
		if w.expiry == 0 {
			continue // removing what is not there
		}
		cur = append(cur, w.bd)
		written[key] = true
		changed, sync = true, true
	}
	if len(cur) > b.policy.MaxContacts {
		// As Kamailio's registrar counts: the bindings after the request
		// against the limit. A request that alone brings more than the
		// limit is refused whatever the policy, changing nothing: no
		// binding of its own could be kept for another of its own.
		if len(written) > b.policy.MaxContacts || b.policy.RejectOverflow {
			sh.mu.Unlock()
			return RegisterResult{}, ErrTooManyContacts
		}
		for len(cur) > b.policy.MaxContacts {
			oldest := -1
			for j := range cur {
				if !written[cur[j].Key()] && (oldest < 0 || cur[j].Updated.Before(cur[oldest].Updated)) {
					oldest = j
				}
			}
			cur = append(cur[:oldest:oldest], cur[oldest+1:]...)
		}
	}
	// What the store is told follows from the outcome, not from the
	// steps: a binding is either written or removed, never both, so the
	// order the store applies them in cannot bring an evicted one back.
	var put []Binding
	var del []BindingRef
	for _, bd := range cur {
		if written[bd.Key()] {
			put = append(put, bd)
		}
	}
	for _, old := range before {
		if indexOf(cur, old.Key()) < 0 {
			del = append(del, BindingRef{r.AOR, old.Key()})
		}
	}
	if (len(put) > 0 || len(del) > 0) && b.stopped.Load() {
		sh.mu.Unlock()
		return RegisterResult{}, errStopped
	}
	b.setLocked(sh, r.AOR, cur)
	if !sync && !b.closing.Load() {
		// Only expiries moved: nothing a restart would need before the
		// phone's next refresh. Written within RefreshWrite, once.
		for _, p := range put {
			sh.refreshed[BindingRef{p.AOR, p.Key()}] = struct{}{}
		}
		if len(put) > 0 && b.policy.RefreshWrite == 0 {
			select {
			case b.flush <- struct{}{}:
			default: // asked already
			}
		}
		put = nil
	}
	out := append([]Binding(nil), cur...)
	// Queued before the lock is released: the store applies this AOR's
	// changes in the order they were decided, so a later REGISTER's
	// removal is never overtaken by an earlier one's write.
	var commit BindingCommit
	if len(put) > 0 || len(del) > 0 {
		commit = b.store.QueueBindings(put, del)
	}
	sh.mu.Unlock()
	if commit != nil {
		if err := commit.Wait(); err != nil {
			return RegisterResult{}, fmt.Errorf("store bindings: %w", err)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Updated.Before(out[j].Updated) })
	return RegisterResult{Bindings: out, Changed: changed}, nil
}

// setLocked stores the AOR's bindings and keeps the URI index in step.
func (b *Bindings) setLocked(sh *shard, aor string, cur []Binding) {
	for _, old := range sh.aors[aor] {
		if ref, ok := sh.byURI[old.URI]; ok && ref.AOR == aor {
			delete(sh.byURI, old.URI)
		}
	}
	for _, bd := range cur {
		sh.byURI[bd.URI] = BindingRef{aor, bd.Key()}
	}
	if len(cur) == 0 {
		delete(sh.aors, aor)
	} else {
		sh.aors[aor] = cur
	}
}

var errStopped = errors.New("registrar is stopping")

// Run writes refreshed bindings and expires bindings until ctx is done;
// it writes the refreshes still held before it returns.
func (b *Bindings) Run(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	removals := time.NewTicker(RemovalPoll)
	defer removals.Stop()
	var refresh <-chan time.Time
	if b.policy.RefreshWrite > 0 {
		t := time.NewTicker(b.policy.RefreshWrite)
		defer t.Stop()
		refresh = t.C
	}
	for {
		select {
		case <-ctx.Done():
			b.closing.Store(true)
			b.writeRefreshed()
			b.stopped.Store(true)
			return
		case <-tick.C:
			b.expire(ctx)
		case <-removals.C:
			b.applyRemovals(ctx)
		case <-refresh:
			b.writeRefreshed()
		case <-b.flush:
			b.writeRefreshed()
		}
	}
}

// writeRefreshed queues every refreshed binding as it is in memory now:
// the newest state, however many refreshes it took, and nothing for a
// binding removed meanwhile. Each shard's bindings are queued before its
// lock is released, so every change computed after them is queued after
// them and lands last. A change computed before but queued after can
// still land last and leave the stored expiry one refresh behind until
// the next one: the race two concurrent REGISTERs of one AOR have, and
// harmless for the same reason. It waits for the commits after the last
// shard is queued, so that one batch may take them all. The wait is not
// cancelled: the marks are cleared as they are taken, and a write given
// up would lose them.
func (b *Bindings) writeRefreshed() {
	type queued struct {
		commit BindingCommit
		count  int
	}
	var commits []queued
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		var put []Binding
		for ref := range sh.refreshed {
			if j := indexOf(sh.aors[ref.AOR], ref.Key); j >= 0 {
				put = append(put, sh.aors[ref.AOR][j])
			}
		}
		clear(sh.refreshed)
		if len(put) > 0 {
			commits = append(commits, queued{b.store.QueueBindings(put, nil), len(put)})
		}
		sh.mu.Unlock()
	}
	for _, q := range commits {
		if err := q.commit.Wait(); err != nil {
			b.log.Error("store refreshed bindings", "count", q.count, "error", err)
		}
	}
}

// contactIsSource reports whether a Contact URI's host is the IP literal
// of the source address (ip:port). Anything it cannot read plainly (a
// header part, a second @) is not: the answer only ever errs towards
// the flow.
func contactIsSource(uri, source string) bool {
	src, err := netip.ParseAddrPort(source)
	if err != nil || strings.Contains(uri, "?") || strings.Count(uri, "@") > 1 {
		return false
	}
	_, rest, ok := strings.Cut(uri, ":") // the scheme
	if !ok {
		return false
	}
	if i := strings.IndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	rest, _, _ = strings.Cut(rest, ";")
	host := rest
	if strings.HasPrefix(rest, "[") {
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return false
		}
		host = rest[1:end]
	} else if h, _, ok := strings.Cut(rest, ":"); ok {
		host = h
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap() == src.Addr().Unmap()
}

// live filters out expired bindings.
func live(bs []Binding, now time.Time) []Binding {
	out := bs[:0:0]
	for _, b := range bs {
		if b.Expires.After(now) {
			out = append(out, b)
		}
	}
	return out
}

func indexOf(bs []Binding, key string) int {
	for i := range bs {
		if bs[i].Key() == key {
			return i
		}
	}
	return -1
}

// expire drops expired bindings from memory and from the store.
func (b *Bindings) expire(ctx context.Context) {
	now := b.now()
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for aor, bs := range sh.aors {
			keep := live(bs, now)
			if len(keep) == len(bs) {
				continue
			}
			for _, bd := range bs {
				if !bd.Expires.After(now) {
					if ref := sh.byURI[bd.URI]; ref.AOR == aor && ref.Key == bd.Key() {
						delete(sh.byURI, bd.URI)
					}
				}
			}
			if len(keep) == 0 {
				delete(sh.aors, aor)
			} else {
				sh.aors[aor] = keep
			}
		}
		sh.mu.Unlock()
	}
	if _, err := b.store.DeleteExpiredBindings(ctx, b.policy.Node, now); err != nil && ctx.Err() == nil {
		b.log.Error("delete expired bindings", "error", err)
	}
}

// applyRemovals forgets the bindings an operator removed from the store.
// A binding refreshed after its removal stays: the phone registered
// again, and its refresh writes the row back. The store's row is deleted
// again too, in case a refresh written behind brought it back.
func (b *Bindings) applyRemovals(ctx context.Context) {
	list, err := b.store.BindingRemovals(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("read binding removals", "error", err)
		}
		return
	}
	var commits []BindingCommit
	var aors []string
	for _, r := range list {
		sh := b.shard(r.AOR)
		sh.mu.Lock()
		cur := sh.aors[r.AOR]
		i := indexOf(cur, r.Key)
		if i < 0 || !cur[i].Updated.Before(r.At) {
			sh.mu.Unlock()
			continue
		}
		gone := cur[i]
		b.setLocked(sh, r.AOR, append(cur[:i:i], cur[i+1:]...))
		delete(sh.refreshed, r.BindingRef)
		commits = append(commits, b.store.QueueBindings(nil, []BindingRef{r.BindingRef}))
		aors = append(aors, r.AOR)
		sh.mu.Unlock()
		b.log.Info("binding removed by the operator", "aor", r.AOR, "contact", gone.URI, "source", gone.Source)
	}
	for i, c := range commits {
		if err := c.Wait(); err != nil && ctx.Err() == nil {
			b.log.Error("delete removed binding", "aor", aors[i], "error", err)
		}
	}
}

// Lookup returns the AOR's live bindings that can be reached.
func (b *Bindings) Lookup(aor string) []Binding {
	now := b.now()
	sh := b.shard(aor)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var out []Binding
	for _, bd := range sh.aors[aor] {
		if b.reachable(bd, now) {
			out = append(out, bd)
		}
	}
	return out
}

// LookupAll returns the AOR's live bindings, unreachable ones too: a
// device whose connection closed may still be woken by a push.
func (b *Bindings) LookupAll(aor string) []Binding {
	now := b.now()
	sh := b.shard(aor)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	var out []Binding
	for _, bd := range sh.aors[aor] {
		if bd.Expires.After(now) {
			if !bd.Unreachable && !b.nodeReaches(bd) {
				bd.Unreachable = true
			}
			out = append(out, bd)
		}
	}
	return out
}

// MarkAsleep marks a binding as a device that did not answer and was sent
// a push: it is not sent to again until it registers again. It reports
// false, marking nothing, when the binding is gone or was registered again
// since updated (the device is awake after all).
func (b *Bindings) MarkAsleep(aor, key string, updated time.Time) bool {
	sh := b.shard(aor)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	bs := sh.aors[aor]
	i := indexOf(bs, key)
	if i < 0 || !bs[i].Updated.Equal(updated) {
		return false
	}
	bs[i].Asleep = true
	return true
}

// LookupURI finds the live binding whose Contact URI is uri, for requests
// sent to a registered contact inside a dialog.
func (b *Bindings) LookupURI(uri string) (Binding, bool) {
	now := b.now()
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		ref, ok := sh.byURI[uri]
		if ok {
			for _, bd := range sh.aors[ref.AOR] {
				if bd.Key() == ref.Key && b.reachable(bd, now) {
					sh.mu.RUnlock()
					return bd, true
				}
			}
		}
		sh.mu.RUnlock()
	}
	return Binding{}, false
}

// FlowClosed marks every binding of this node on the connection from source
// over transport unreachable.
func (b *Bindings) FlowClosed(transport, source string) {
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.Lock()
		for _, bs := range sh.aors {
			for j := range bs {
				if bs[j].Source == source && bs[j].Transport == transport && bs[j].Node == b.policy.Node {
					bs[j].Unreachable = true
				}
			}
		}
		sh.mu.Unlock()
	}
}

// Reachable lists the AORs with at least one reachable live binding.
func (b *Bindings) Reachable() []string {
	now := b.now()
	var out []string
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for aor, bs := range sh.aors {
			for _, bd := range bs {
				if b.reachable(bd, now) {
					out = append(out, aor)
					break
				}
			}
		}
		sh.mu.RUnlock()
	}
	return out
}

// Stats counts live bindings by transport and AORs with at least one:
// those this node holds the flows of, when it is one of several.
func (b *Bindings) Stats() (byTransport map[string]int, aors int) {
	now := b.now()
	byTransport = map[string]int{}
	for i := range b.shards {
		sh := &b.shards[i]
		sh.mu.RLock()
		for _, bs := range sh.aors {
			n := 0
			for _, bd := range bs {
				if b.policy.Peer != nil && bd.Node != b.policy.Node {
					continue // the node holding it counts it
				}
				if b.reachable(bd, now) {
					byTransport[bd.Transport]++
					n++
				}
			}
			if n > 0 {
				aors++
			}
		}
		sh.mu.RUnlock()
	}
	return byTransport, aors
}
