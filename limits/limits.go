// Package limits protects gchd from abuse: token-bucket rate limits per key
// (a source address, say), failure throttling in the manner of fail2ban,
// and caps on concurrent connections per address. Settings can change while
// the server runs (SIGHUP). It imports nothing of gchd's.
package limits

import (
	"hash/maphash"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// shards spread keys over locks.
const shards = 32

// sweepEvery is how many calls pass between sweeps of idle keys.
const sweepEvery = 4096

// idle is how long an unused key is kept.
const idle = 10 * time.Minute

// Rate limits events per key with a token bucket: r per second, bursts of
// up to burst. r <= 0 turns it off.
type Rate struct {
	seed   maphash.Seed
	now    func() time.Time
	limit  atomic.Value // rateSetting
	calls  atomic.Uint64
	shards [shards]rateShard
}

type rateSetting struct {
	r     rate.Limit
	burst int
}

type rateShard struct {
	mu   sync.Mutex
	keys map[string]*rateEntry
}

type rateEntry struct {
	lim  *rate.Limiter
	last time.Time
}

// NewRate returns a Rate of r events per second with bursts of burst.
func NewRate(r float64, burst int) *Rate {
	l := &Rate{seed: maphash.MakeSeed(), now: time.Now}
	for i := range l.shards {
		l.shards[i].keys = map[string]*rateEntry{}
	}
	l.Set(r, burst)
	return l
}

// Set changes the rate and burst of every key.
func (l *Rate) Set(r float64, burst int) {
	if burst < 1 {
		burst = 1
	}
	l.limit.Store(rateSetting{r: rate.Limit(r), burst: burst})
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for _, e := range sh.keys {
			e.lim.SetLimit(rate.Limit(r))
			e.lim.SetBurst(burst)
		}
		sh.mu.Unlock()
	}
}

// Allow reports whether an event for key may happen now.
func (l *Rate) Allow(key string) bool {
	s := l.limit.Load().(rateSetting)
	if s.r <= 0 {
		return true
	}
	now := l.now()
	sh := &l.shards[maphash.String(l.seed, key)%shards]
	sh.mu.Lock()
	e := sh.keys[key]
	if e == nil {
		e = &rateEntry{lim: rate.NewLimiter(s.r, s.burst)}
		sh.keys[key] = e
	}
	e.last = now
	ok := e.lim.AllowN(now, 1)
	sh.mu.Unlock()
	if l.calls.Add(1)%sweepEvery == 0 {
		l.sweep(now)
	}
	return ok
}

// sweep forgets keys unused for a while, so that memory stays bounded by
// the addresses seen recently.
func (l *Rate) sweep(now time.Time) {
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, e := range sh.keys {
			if now.Sub(e.last) > idle {
				delete(sh.keys, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Failures throttles after repeated failures, as fail2ban does: a key
// with Max failures within Window is refused for Ban. Max <= 0 turns it off.
// A failure may be attributed to an account (a source's failed login names
// one), so that a success later clears only the failures it disproves.
type Failures struct {
	seed   maphash.Seed
	now    func() time.Time
	set    atomic.Value // failureSetting
	calls  atomic.Uint64
	shards [shards]failShard
}

type failureSetting struct {
	max    int
	window time.Duration
	ban    time.Duration
}

type failShard struct {
	mu   sync.Mutex
	keys map[string]*failEntry
}

type failEntry struct {
	count       int
	windowStart time.Time
	bannedUntil time.Time
	// accounts are the failures by the account they were against: their
	// count in the current window and when the last one was.
	accounts map[string]*attributed
}

type attributed struct {
	count int
	last  time.Time
}

// maxAttributed bounds the accounts remembered per key. A key reaches it
// only by failing against that many accounts while staying under max per
// window; the oldest are forgotten.
const maxAttributed = 256

// NewFailures returns a Failures: max failures within window ban for ban.
func NewFailures(max int, window, ban time.Duration) *Failures {
	f := &Failures{seed: maphash.MakeSeed(), now: time.Now}
	for i := range f.shards {
		f.shards[i].keys = map[string]*failEntry{}
	}
	f.Set(max, window, ban)
	return f
}

// Set changes the settings.
func (f *Failures) Set(max int, window, ban time.Duration) {
	f.set.Store(failureSetting{max: max, window: window, ban: ban})
}

func (f *Failures) shard(key string) *failShard {
	return &f.shards[maphash.String(f.seed, key)%shards]
}

// Banned reports whether key is refused now.
func (f *Failures) Banned(key string) bool {
	if f.set.Load().(failureSetting).max <= 0 {
		return false
	}
	sh := f.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[key]
	return e != nil && f.now().Before(e.bannedUntil)
}

// Suspect reports whether key is banned or has failed within the last Ban
// (against any account) without a success clearing that failure.
func (f *Failures) Suspect(key string) bool {
	s := f.set.Load().(failureSetting)
	now := f.now()
	sh := f.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[key]
	if e == nil {
		return false
	}
	if now.Before(e.bannedUntil) {
		return true
	}
	for _, a := range e.accounts {
		if now.Sub(a.last) < max(s.ban, s.window) {
			return true
		}
	}
	return false
}

// Fail records a failure for key and reports whether it is now banned.
func (f *Failures) Fail(key string) bool { return f.FailAs(key, "") }

// FailAs records a failure of key against account and reports whether key
// is now banned. With max <= 0 nothing is banned, but failures are still
// recorded for Suspect.
func (f *Failures) FailAs(key, account string) bool {
	s := f.set.Load().(failureSetting)
	now := f.now()
	sh := f.shard(key)
	sh.mu.Lock()
	e := sh.keys[key]
	if e == nil {
		e = &failEntry{windowStart: now, accounts: map[string]*attributed{}}
		sh.keys[key] = e
	}
	if now.Sub(e.windowStart) > s.window {
		e.newWindow(now)
	}
	e.count++
	a := e.accounts[account]
	if a == nil {
		e.forgetOld(now, max(s.ban, s.window))
		a = &attributed{}
		e.accounts[account] = a
	}
	a.count++
	a.last = now
	banned := false
	if s.max > 0 && e.count >= s.max {
		e.bannedUntil = now.Add(s.ban)
		e.newWindow(now)
		banned = true
	}
	sh.mu.Unlock()
	if f.calls.Add(1)%sweepEvery == 0 {
		f.sweep(now, s)
	}
	return banned
}

// newWindow starts counting afresh; when each account last failed is kept.
func (e *failEntry) newWindow(now time.Time) {
	e.count, e.windowStart = 0, now
	for _, a := range e.accounts {
		a.count = 0
	}
}

// forgetOld drops the accounts whose last failure is older than keep, and
// the oldest when the entry holds maxAttributed.
func (e *failEntry) forgetOld(now time.Time, keep time.Duration) {
	for k, a := range e.accounts {
		if now.Sub(a.last) >= keep {
			delete(e.accounts, k)
		}
	}
	for len(e.accounts) >= maxAttributed {
		oldest := ""
		var t time.Time
		for k, a := range e.accounts {
			if oldest == "" || a.last.Before(t) {
				oldest, t = k, a.last
			}
		}
		delete(e.accounts, oldest)
	}
}

// SucceedAs records that key proved to own account: the failures of key
// against that account are forgotten (they were the owner's typing), and
// no others. An active ban stays.
func (f *Failures) SucceedAs(key, account string) {
	sh := f.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.keys[key]
	if e == nil {
		return
	}
	if a := e.accounts[account]; a != nil {
		e.count = max(0, e.count-a.count)
		delete(e.accounts, account)
	}
	if len(e.accounts) == 0 && !f.now().Before(e.bannedUntil) {
		delete(sh.keys, key)
	}
}

func (f *Failures) sweep(now time.Time, s failureSetting) {
	keep := max(s.ban, s.window)
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for k, e := range sh.keys {
			if !now.After(e.bannedUntil) {
				continue
			}
			e.forgetOld(now, keep)
			if len(e.accounts) == 0 && now.Sub(e.windowStart) > s.window {
				delete(sh.keys, k)
			}
		}
		sh.mu.Unlock()
	}
}

// Conns caps concurrent connections per key. Max <= 0 turns it off.
type Conns struct {
	max  atomic.Int64
	mu   sync.Mutex
	open map[string]int
}

// NewConns returns a cap of max connections per key.
func NewConns(max int) *Conns {
	c := &Conns{open: map[string]int{}}
	c.Set(max)
	return c
}

// Set changes the cap.
func (c *Conns) Set(max int) { c.max.Store(int64(max)) }

// Acquire takes a connection slot for key; false when the key is at its cap.
func (c *Conns) Acquire(key string) bool {
	max := c.max.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && int64(c.open[key]) >= max {
		return false
	}
	c.open[key]++
	return true
}

// Open returns how many slots key holds.
func (c *Conns) Open(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.open[key]
}

// Release gives a slot back.
func (c *Conns) Release(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.open[key] <= 1 {
		delete(c.open, key)
		return
	}
	c.open[key]--
}

// Listener wraps ln so that a connection from a source at its cap is closed
// at once; onReject (optional) is told of each.
func (c *Conns) Listener(ln net.Listener, onReject func()) net.Listener {
	return &capListener{Listener: ln, conns: c, onReject: onReject}
}

type capListener struct {
	net.Listener
	conns    *Conns
	onReject func()
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		key := Source(conn.RemoteAddr())
		if l.conns.Acquire(key) {
			return &capConn{Conn: conn, release: func() { l.conns.Release(key) }}, nil
		}
		conn.Close()
		if l.onReject != nil {
			l.onReject()
		}
	}
}

type capConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *capConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// Source is the key of a remote address: its IP, without the port.
func Source(a net.Addr) string {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.IP.String()
	case *net.UDPAddr:
		return v.IP.String()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}
