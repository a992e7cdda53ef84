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
}

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

// Fail records a failure for key and reports whether it is now banned.
func (f *Failures) Fail(key string) bool {
	s := f.set.Load().(failureSetting)
	if s.max <= 0 {
		return false
	}
	now := f.now()
	sh := f.shard(key)
	sh.mu.Lock()
	e := sh.keys[key]
	if e == nil {
		e = &failEntry{windowStart: now}
		sh.keys[key] = e
	}
	if now.Sub(e.windowStart) > s.window {
		e.count, e.windowStart = 0, now
	}
	e.count++
	banned := false
	if e.count >= s.max {
		e.bannedUntil, e.count, e.windowStart = now.Add(s.ban), 0, now
		banned = true
	}
	sh.mu.Unlock()
	if f.calls.Add(1)%sweepEvery == 0 {
		f.sweep(now, s)
	}
	return banned
}

// Succeed forgets the failures of key (not an active ban).
func (f *Failures) Succeed(key string) {
	sh := f.shard(key)
	sh.mu.Lock()
	if e := sh.keys[key]; e != nil && !f.now().Before(e.bannedUntil) {
		delete(sh.keys, key)
	}
	sh.mu.Unlock()
}

func (f *Failures) sweep(now time.Time, s failureSetting) {
	for i := range f.shards {
		sh := &f.shards[i]
		sh.mu.Lock()
		for k, e := range sh.keys {
			if now.After(e.bannedUntil) && now.Sub(e.windowStart) > s.window {
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
