// Command sipload is the SIP side of gchd's SIP benchmark (bench/sip): a
// crowd of registered phones on one socket that answer every MESSAGE with
// 200, and a fixed-rate driver of the HTTP API's sendMessage that times
// every group delivery by its X-GC-MID header.
//
//	sipload uas    [flags]   register users, answer MESSAGE, count them
//	sipload fanout [flags]   register a group's members, post to the group
//	                         over the API at fixed rates, count deliveries
//	sipload relay  [flags]   MESSAGEs from one phone to users registered at
//	                         fixed rates, through one node or two
//
// Run "sipload uas -h" or "sipload fanout -h" for the flags. See
// bench/sip/README.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit/sipua"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "uas":
		err = runUAS(os.Args[2:])
	case "fanout":
		err = runFanout(os.Args[2:])
	case "relay":
		err = runRelay(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sipload:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sipload uas|fanout|relay [flags] (-h for the flags)")
	os.Exit(2)
}

// phoneFlags are the flags shared by both commands: where the server is and
// who registers.
type phoneFlags struct {
	server    string
	domain    string
	transport string
	listen    string
	first     int
	expires   int
	regRate   int
	linger    time.Duration
}

func (p *phoneFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.server, "server", "127.0.0.1:5080", "SIP server host:port")
	fs.StringVar(&p.domain, "domain", "127.0.0.1", "SIP domain (R-URI, From and To host)")
	fs.StringVar(&p.transport, "transport", "udp", "udp or tcp")
	fs.StringVar(&p.listen, "listen", "127.0.0.1:5090", "where the phones listen (their Contact)")
	fs.IntVar(&p.first, "first", 1, "number of the first user")
	fs.IntVar(&p.expires, "expires", 3600, "registration expiry (s)")
	fs.IntVar(&p.regRate, "reg-rate", 500, "registrations per second at start")
	fs.DurationVar(&p.linger, "linger", time.Second, "how long an answered UDP transaction is kept for retransmissions (Timer J)")
}

// login formats a user name or password pattern: "user%05d" with the number,
// or a fixed string.
func login(pattern string, n int) string {
	if strings.Contains(pattern, "%") {
		return fmt.Sprintf(pattern, n)
	}
	return pattern
}

// phones is one user agent that registers many users from one socket (UDP)
// or one connection (TCP) and answers their MESSAGEs.
type phones struct {
	f        phoneFlags
	sip      *sipua.Phone
	tcp      net.Listener
	contact  sip.Uri
	received atomic.Int64
	onMsg    func(req *sip.Request, at time.Time)
}

func newPhones(f phoneFlags, onMsg func(req *sip.Request, at time.Time)) (*phones, error) {
	f.transport = strings.ToUpper(f.transport)
	if f.transport != "UDP" && f.transport != "TCP" {
		return nil, fmt.Errorf("transport %q: want udp or tcp", f.transport)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sip.SetDefaultLogger(quiet)
	// sipgo keeps each answered UDP transaction for Timer J, 32 s, to
	// absorb retransmissions. At 10,000 MESSAGEs a second that is 300,000
	// live transactions, and this tool's collector, marking them, paused
	// the receipts it times by tens of milliseconds: gchd's p99 was the
	// tool's. A retransmission needs a lost answer, which loopback does
	// not lose; one that came after a second would count as a duplicate
	// and fail the step, not go unseen.
	sip.Timer_J = f.linger
	host, portStr, err := net.SplitHostPort(f.listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	port, _ := strconv.Atoi(portStr)
	sp, err := sipua.New(f.transport, f.server, sipua.WithName("sipload"), sipua.WithHostname(f.domain),
		sipua.WithClientHost(host), sipua.WithLogger(quiet))
	if err != nil {
		return nil, err
	}
	p := &phones{f: f, sip: sp, onMsg: onMsg}
	p.contact = sip.Uri{Scheme: "sip", Host: host, Port: port}
	// Handlers before serving: sipgo reads its handler map without a lock.
	sp.Server.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		at := time.Now()
		p.received.Add(1)
		if p.onMsg != nil {
			p.onMsg(req, at)
		}
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	sp.Server.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	if f.transport == "UDP" {
		if err := sp.ListenUDP(f.listen); err != nil {
			sp.Close()
			return nil, err
		}
		if uc, ok := sp.Conn.(*net.UDPConn); ok {
			uc.SetReadBuffer(4 << 20)
		}
		if err := sp.ServeUDP(); err != nil {
			sp.Close()
			return nil, err
		}
	} else {
		// Listening too, for a server that connects to the Contact (Kamailio);
		// gchd sends over the connection the phones registered on.
		p.tcp, err = net.Listen("tcp", f.listen)
		if err != nil {
			sp.Close()
			return nil, err
		}
		go sp.Server.ServeTCP(p.tcp)
		p.contact.UriParams = sip.HeaderParams{{K: "transport", V: "tcp"}}
	}
	return p, nil
}

func (p *phones) close() {
	p.sip.Close()
	if p.tcp != nil {
		p.tcp.Close()
	}
}

// registerOne registers user with the phones' Contact, answering a digest
// challenge with password.
func (p *phones) registerOne(ctx context.Context, user, password string) error {
	c := p.contact
	c.User = user
	req := sipua.RegisterRequest(sipua.Registration{Domain: p.f.domain, User: user, Contact: sip.ContactHeader{Address: c},
		CallID: fmt.Sprintf("reg-%s-%d@sipload", user, time.Now().UnixNano()), CSeq: 1, Expires: p.f.expires})
	res, err := p.sip.Do(ctx, req, user, password)
	if err != nil {
		return err
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("REGISTER %s: %s", user, res.StartLine())
	}
	return nil
}

// numbers returns first..first+count-1.
func numbers(first, count int) []int {
	ns := make([]int, count)
	for i := range ns {
		ns[i] = first + i
	}
	return ns
}

// registerAll registers the users numbered nums, at most regRate a second,
// and fails on the first refusal.
func (p *phones) registerAll(userPattern, passPattern string, nums []int) error {
	count := len(nums)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(count/max(1, p.f.regRate)+60)*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, count)
	tick := time.NewTicker(time.Second / time.Duration(max(1, p.f.regRate)))
	defer tick.Stop()
	sem := make(chan struct{}, 64)
	for i := 0; i < count; i++ {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		n := nums[i]
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var err error
			for attempt := 0; attempt < 3; attempt++ {
				if err = p.registerOne(ctx, login(userPattern, n), login(passPattern, n)); err == nil {
					return
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	var first error
	for err := range errs {
		if first == nil {
			first = err
		}
		failed++
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d registrations failed, first: %w", failed, count, first)
	}
	return nil
}

// ---------------------------------------------------------------- uas

func runUAS(args []string) error {
	fs := flag.NewFlagSet("uas", flag.ExitOnError)
	var f phoneFlags
	f.register(fs)
	users := fs.String("users", "user%05d", "user name pattern (fmt verb for the number)")
	passwords := fs.String("passwords", "pass%05d", "password pattern")
	count := fs.Int("count", 1000, "users to register")
	stats := fs.String("stats", "127.0.0.1:18190", "HTTP address that serves /count (MESSAGEs answered)")
	fs.Parse(args)
	p, err := newPhones(f, nil)
	if err != nil {
		return err
	}
	defer p.close()
	start := time.Now()
	if err := p.registerAll(*users, *passwords, numbers(f.first, *count)); err != nil {
		return err
	}
	fmt.Printf("# registered %d users over %s from %s in %.1fs\n", *count, strings.ToUpper(f.transport), f.listen,
		time.Since(start).Seconds())
	ln, err := net.Listen("tcp", *stats)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, p.received.Load())
	})
	go http.Serve(ln, mux)
	fmt.Println("# ready")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	fmt.Printf("# answered %d MESSAGEs\n", p.received.Load())
	return nil
}

// ---------------------------------------------------------------- fanout

// receipts records when each member received each message. It keeps no
// map or string per receipt: the tool's own garbage collector, marking a
// heap of per-message maps, once paused the receiving goroutine for tens
// of milliseconds, and those pauses showed up as gchd's latency.
type receipts struct {
	mu     sync.Mutex
	member map[string]int // login -> bit in midReceipts.seen
	byMID  map[uint64]*midReceipts
	dups   int
	// unmatched counts MESSAGEs that are no member's receipt of a
	// message: no X-GC-MID, or to a login that is not a member.
	unmatched int
}

type midReceipts struct {
	seen  []uint64 // bit i: member i has received it
	n     int
	first time.Time
	last  time.Time
}

func newReceipts(logins []string) (*receipts, error) {
	r := &receipts{member: make(map[string]int, len(logins)), byMID: map[uint64]*midReceipts{}}
	for i, l := range logins {
		if _, dup := r.member[l]; dup {
			return nil, fmt.Errorf("members: %q twice (the pattern needs a %%d)", l)
		}
		r.member[l] = i
	}
	return r, nil
}

func (r *receipts) add(req *sip.Request, at time.Time) {
	h := req.GetHeader("X-GC-MID")
	r.mu.Lock()
	defer r.mu.Unlock()
	if h == nil {
		r.unmatched++
		return
	}
	mid, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 64)
	i, ok := r.member[req.Recipient.User]
	if err != nil || !ok {
		r.unmatched++
		return
	}
	m := r.byMID[mid]
	if m == nil {
		m = &midReceipts{seen: make([]uint64, (len(r.member)+63)/64), first: at}
		r.byMID[mid] = m
	}
	word, bit := i/64, uint64(1)<<(i%64)
	if m.seen[word]&bit != 0 {
		r.dups++
		return
	}
	m.seen[word] |= bit
	m.n++
	m.last = at
}

// sent is one sendMessage call.
type sent struct {
	mid    uint64
	status int
	err    error
	start  time.Time
	answer time.Time
}

type fanoutFlags struct {
	phoneFlags
	api        string
	metricsURL string
	sender     string
	group      int
	members    string
	memberPass string
	count      int
	rates      string
	start      int
	factor     float64
	maxRate    int
	bisect     int
	step       int
	retries    int
	dur        time.Duration
	warmup     time.Duration
	drain      time.Duration
	cooldown   time.Duration
	minAch     float64
	pids       string
	dbProc     string
	servers    string
	out        string
	label      string
	conns      int
}

func runFanout(args []string) error {
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	var f fanoutFlags
	f.register(fs)
	fs.StringVar(&f.servers, "servers", "", "comma-separated SIP servers (cluster nodes): member i registers with the (i mod n)-th, "+
		"each server's members from their own socket, -listen's port + the server's index (empty: -server)")
	fs.StringVar(&f.api, "api", "http://127.0.0.1:18080/gch.ashx", "gchd API URL, or a comma-separated list that posts go to in turn")
	fs.StringVar(&f.metricsURL, "metrics", "http://127.0.0.1:18080/metrics", "gchd metrics URL or comma-separated URLs, "+
		"delivery outcomes summed (empty: not read)")
	fs.StringVar(&f.sender, "sender", "sender:x", "login:password of the member who posts")
	fs.IntVar(&f.group, "group", 1, "group id")
	fs.StringVar(&f.members, "members", "member%02d", "members' login pattern; they are registered at -listen")
	fs.StringVar(&f.memberPass, "member-password", "x", "members' password pattern")
	fs.IntVar(&f.count, "count", 30, "members (first..first+count-1) that receive each message")
	fs.StringVar(&f.rates, "rates", "", "comma-separated messages/s to run in order (stops at the first failure)")
	fs.IntVar(&f.start, "start", 100, "ramp: first rate (messages/s)")
	fs.Float64Var(&f.factor, "factor", 1.25, "ramp: next rate = rate * factor")
	fs.IntVar(&f.maxRate, "max-rate", 5000, "ramp: highest rate")
	fs.IntVar(&f.bisect, "bisect", 3, "bisection steps after the first failing rate")
	fs.IntVar(&f.step, "granularity", 10, "rates are rounded to this")
	fs.IntVar(&f.retries, "retries", 1, "run a failing rate again this many times (noisy host)")
	fs.DurationVar(&f.dur, "dur", 8*time.Second, "duration of each step")
	fs.DurationVar(&f.warmup, "warmup", 3*time.Second, "untracked warm-up at half the first rate (0: none)")
	fs.DurationVar(&f.drain, "drain", 2*time.Second, "time after the last answer for the deliveries to arrive")
	fs.DurationVar(&f.cooldown, "cooldown", 2*time.Second, "pause between steps")
	fs.Float64Var(&f.minAch, "min-achieved", 0.97, "a step passes only if this share of the target rate was answered")
	fs.StringVar(&f.pids, "pid", "", "gchd's process id, or comma-separated ids, for the server CPU (summed, and each)")
	fs.StringVar(&f.dbProc, "db-proc", "", "also count the CPU of every process of this name (postgres)")
	fs.StringVar(&f.out, "out", "", "append one TSV row per step to this file")
	fs.StringVar(&f.label, "label", "fanout", "label of the TSV rows")
	fs.IntVar(&f.conns, "conns", 256, "most HTTP connections")
	fs.Parse(args)
	if f.listen == "127.0.0.1:5090" {
		f.listen = "127.0.0.1:5091"
	}

	logins := make([]string, f.count)
	for i := range logins {
		logins[i] = login(f.members, f.first+i)
	}
	rec, err := newReceipts(logins)
	if err != nil {
		return err
	}
	servers := splitList(f.servers)
	if len(servers) == 0 {
		servers = []string{f.server}
	}
	listens, err := listenAddrs(f.listen, len(servers))
	if err != nil {
		return err
	}
	nums := make([][]int, len(servers))
	for i := 0; i < f.count; i++ {
		nums[i%len(servers)] = append(nums[i%len(servers)], f.first+i)
	}
	for k, server := range servers {
		pf := f.phoneFlags
		pf.server, pf.listen = server, listens[k]
		p, err := newPhones(pf, rec.add)
		if err != nil {
			return err
		}
		defer p.close()
		if err := p.registerAll(f.members, f.memberPass, nums[k]); err != nil {
			return err
		}
		if len(servers) == 1 {
			fmt.Printf("# registered %d members over %s at %s\n", f.count, strings.ToUpper(f.transport), f.listen)
		} else {
			fmt.Printf("# registered %d members over %s at %s with %s\n", len(nums[k]), strings.ToUpper(f.transport), pf.listen, server)
		}
	}
	pids, err := parsePIDs(f.pids)
	if err != nil {
		return err
	}

	d := &driver{f: f, rec: rec, apis: splitList(f.api), metrics: splitList(f.metricsURL), cpu: newCPUMeter(pids, f.dbProc), client: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: f.conns, MaxIdleConnsPerHost: f.conns, MaxConnsPerHost: f.conns,
			IdleConnTimeout: time.Minute},
	}}
	d.user, d.pass, _ = strings.Cut(f.sender, ":")

	if f.warmup > 0 {
		w := d.f
		rate := max(10, f.start/2)
		if f.rates != "" {
			if r, err := strconv.Atoi(strings.Split(f.rates, ",")[0]); err == nil {
				rate = max(10, r/2)
			}
		}
		res := d.run(rate, w.warmup)
		fmt.Printf("# warm-up %s at %d/s done (%s)\n", f.warmup, rate, map[bool]string{true: "ok", false: "NOT ok"}[res.pass])
		time.Sleep(f.cooldown)
	}
	step := func(rate int) result {
		var r result
		for attempt := 0; attempt <= f.retries; attempt++ {
			r = d.run(rate, f.dur)
			line := r.String()
			if attempt > 0 {
				line += fmt.Sprintf(" (retry %d)", attempt)
			}
			fmt.Println(line)
			d.log(r)
			time.Sleep(f.cooldown)
			if r.pass {
				break
			}
		}
		return r
	}
	var best *result
	bad := 0
	if f.rates != "" {
		for _, s := range strings.Split(f.rates, ",") {
			rate, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("rates: %w", err)
			}
			r := step(rate)
			if !r.pass {
				bad = rate
				break
			}
			best = &r
		}
	} else {
		for rate := f.start; rate <= f.maxRate; {
			r := step(rate)
			if !r.pass {
				bad = rate
				break
			}
			best = &r
			next := int(math.Round(float64(rate)*f.factor/float64(f.step))) * f.step
			rate = max(next, rate+f.step)
		}
	}
	lo := 0
	if best != nil {
		lo = best.rate
	}
	for i := 0; i < f.bisect && bad > 0; i++ {
		mid := int(math.Round(float64(lo+bad)/2/float64(f.step))) * f.step
		if mid <= lo || mid >= bad {
			break
		}
		r := step(mid)
		if r.pass {
			best, lo = &r, mid
		} else {
			bad = mid
		}
	}
	if best == nil {
		fmt.Printf("MAX fanout: no passing rate (first failing %d)\n", bad)
		return nil
	}
	fmt.Printf("MAX fanout: %d messages/s target, %.1f/s answered, %.0f member deliveries/s, p50 %.1f ms, p99 %.1f ms, srvCPU=%.1f%%, first failing rate=%d\n",
		best.rate, best.achieved, best.delivRate, ms(best.p50), ms(best.p99), best.srvCPU, bad)
	return nil
}

type driver struct {
	f          fanoutFlags
	rec        *receipts
	apis       []string
	metrics    []string
	cpu        *cpuMeter
	next       atomic.Uint64 // the API of the next post, in turn
	client     *http.Client
	user, pass string
	seq        int
}

// result is one step.
type result struct {
	rate           int
	sent, ok, fail int
	achieved       float64
	elapsed        float64
	expected       int
	delivered      int
	dups           int
	unmatched      int
	delivRate      float64
	drainMS        float64
	p50, p90, p99  time.Duration
	pmax           time.Duration
	api50, api99   time.Duration
	srvCPU, myCPU  float64
	cpu            cpuUse
	rcvbufErr      int64
	outcomes       map[string]float64
	pass           bool
	firstErr       string
}

// failures counts gchd's delivery attempts that were retried, failed or
// expired. "stored" is not one: it is a delivery waiting for a member to
// register (gchd older than the rule that the sender is no recipient of her
// own text stored one for the sender, who has no device here, per message).
// Nor is "handed_over": in a cluster, a delivery passed to the node that
// holds the member's flow, which counts it as delivered.
func (r result) failures() float64 {
	n := 0.0
	for k, v := range r.outcomes {
		if k != "delivered" && k != "stored" && k != "handed_over" {
			n += v
		}
	}
	return n
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r result) String() string {
	s := fmt.Sprintf("fanout rate=%5d achieved=%7.1f/s ok=%6d fail=%4d delivered=%7d/%7d dups=%d (%.1f/s) drain=%.0fms "+
		"last-receipt-after-200 p50=%.1fms p90=%.1fms p99=%.1fms max=%.1fms api p50=%.1fms p99=%.1fms srvCPU=%5.1f%% loadCPU=%5.1f%% udpRcvbufErr=%d",
		r.rate, r.achieved, r.ok, r.fail, r.delivered, r.expected, r.dups, r.delivRate, r.drainMS,
		ms(r.p50), ms(r.p90), ms(r.p99), ms(r.pmax), ms(r.api50), ms(r.api99), r.srvCPU, r.myCPU, r.rcvbufErr)
	s += r.cpu.perTransaction("deliv", r.delivered)
	if len(r.outcomes) > 0 {
		var keys []string
		for k := range r.outcomes {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s=%.0f", k, r.outcomes[k]))
		}
		s += " gchd[" + strings.Join(parts, " ") + "]"
	}
	if r.unmatched > 0 {
		s += fmt.Sprintf(" unmatched=%d", r.unmatched)
	}
	if r.firstErr != "" {
		s += " first-error=" + strconv.Quote(r.firstErr)
	}
	if r.pass {
		return s + "  PASS"
	}
	return s + "  FAIL"
}

func (d *driver) log(r result) {
	if d.f.out == "" {
		return
	}
	fh, err := os.OpenFile(d.f.out, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Size() == 0 {
		fmt.Fprintln(fh, "time\tlabel\ttarget_rate\tok\tfail\tachieved\texpected\tdelivered\tdups\tdeliv_rate\tdrain_ms\tp50_ms\tp90_ms\tp99_ms\tmax_ms\tapi_p50_ms\tapi_p99_ms\tsrv_cpu\tload_cpu\tudp_rcvbuf_err\tgchd_retried_failed\tpass")
	}
	fmt.Fprintf(fh, "%s\t%s\t%d\t%d\t%d\t%.1f\t%d\t%d\t%d\t%.1f\t%.0f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%d\t%.0f\t%v\n",
		time.Now().Format("2006-01-02 15:04:05"), d.f.label, r.rate, r.ok, r.fail, r.achieved, r.expected, r.delivered, r.dups,
		r.delivRate, r.drainMS, ms(r.p50), ms(r.p90), ms(r.p99), ms(r.pmax), ms(r.api50), ms(r.api99), r.srvCPU, r.myCPU,
		r.rcvbufErr, r.failures(), r.pass)
}

// run posts at rate for dur, waits for the deliveries and measures.
func (d *driver) run(rate int, dur time.Duration) result {
	n := int(float64(rate) * dur.Seconds())
	res := result{rate: rate, sent: n}
	d.seq++
	outcomes0 := d.outcomes()
	d.rec.mu.Lock()
	unmatched0 := d.rec.unmatched
	d.rec.mu.Unlock()
	cpu0, my0, rb0 := d.cpu.read(), procTicks(os.Getpid()), rcvbufErrors()
	calls := make([]sent, n)
	var wg sync.WaitGroup
	t0 := time.Now()
	interval := time.Duration(float64(time.Second) / float64(rate))
	for i := 0; i < n; i++ {
		at := t0.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			calls[i] = d.post(fmt.Sprintf("fan %d.%d", d.seq, i))
		}(i)
	}
	wg.Wait()
	lastAnswer := t0
	for _, c := range calls {
		if c.answer.After(lastAnswer) {
			lastAnswer = c.answer
		}
	}
	// Wait for the deliveries, up to drain after the last answer.
	mids := map[uint64]*sent{}
	var apiLat []time.Duration
	for i := range calls {
		c := &calls[i]
		if c.err == nil && c.status == 200 && c.mid != 0 {
			res.ok++
			mids[c.mid] = c
			apiLat = append(apiLat, c.answer.Sub(c.start))
		} else {
			res.fail++
			if res.firstErr == "" {
				if c.err != nil {
					res.firstErr = c.err.Error()
				} else {
					res.firstErr = "HTTP " + strconv.Itoa(c.status)
				}
			}
		}
	}
	res.expected = res.ok * d.f.count
	deadline := lastAnswer.Add(d.f.drain)
	for {
		got, _, _ := d.count(mids)
		if got >= res.expected || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t1 := time.Now()
	cpu1, my1, rb1 := d.cpu.read(), procTicks(os.Getpid()), rcvbufErrors()
	var lastReceipt time.Time
	res.delivered, res.dups, lastReceipt = d.count(mids)
	d.rec.mu.Lock()
	res.unmatched = d.rec.unmatched - unmatched0
	d.rec.mu.Unlock()
	res.elapsed = lastAnswer.Sub(t0).Seconds()
	if res.elapsed > 0 {
		res.achieved = float64(res.ok) / res.elapsed
		res.delivRate = float64(res.delivered) / res.elapsed
	}
	if !lastReceipt.IsZero() {
		res.drainMS = ms(lastReceipt.Sub(lastAnswer))
	}
	// Latency: from the API's answer to the last member's receipt, for
	// messages every member received.
	var lat []time.Duration
	d.rec.mu.Lock()
	for mid, c := range mids {
		if m := d.rec.byMID[mid]; m != nil && m.n >= d.f.count {
			lat = append(lat, m.last.Sub(c.answer))
		}
	}
	d.rec.mu.Unlock()
	res.p50, res.p90, res.p99, res.pmax = pct(lat, 0.5), pct(lat, 0.9), pct(lat, 0.99), pct(lat, 1)
	res.api50, res.api99 = pct(apiLat, 0.5), pct(apiLat, 0.99)
	wall := t1.Sub(t0).Seconds()
	hz := 100.0
	res.cpu = d.cpu.use(cpu0, cpu1, wall)
	res.srvCPU = res.cpu.total
	res.myCPU = 100 * float64(my1-my0) / hz / wall
	res.rcvbufErr = rb1 - rb0
	// Let the settlements (written in batches) land before reading them.
	time.Sleep(200 * time.Millisecond)
	if outcomes1 := d.outcomes(); outcomes0 != nil && outcomes1 != nil {
		res.outcomes = map[string]float64{}
		for k, v := range outcomes1 {
			if dv := v - outcomes0[k]; dv != 0 {
				res.outcomes[k] = dv
			}
		}
	}
	res.pass = res.fail == 0 && res.achieved >= d.f.minAch*float64(rate) && res.delivered == res.expected && res.dups == 0 && res.unmatched == 0 &&
		res.failures() == 0
	// Forget this step's receipts.
	d.rec.mu.Lock()
	for mid := range mids {
		delete(d.rec.byMID, mid)
	}
	d.rec.mu.Unlock()
	return res
}

// count returns the deliveries of mids received so far, the duplicates and
// the time of the last.
func (d *driver) count(mids map[uint64]*sent) (n, dups int, last time.Time) {
	d.rec.mu.Lock()
	defer d.rec.mu.Unlock()
	for mid := range mids {
		if m := d.rec.byMID[mid]; m != nil {
			n += m.n
			if m.last.After(last) {
				last = m.last
			}
		}
	}
	return n, d.rec.dups, last
}

// post sends one sendMessage.
func (d *driver) post(text string) sent {
	s := sent{start: time.Now()}
	form := url.Values{}
	form.Set("gm", "sendMessage")
	form.Set("pm", fmt.Sprintf(`{"id":%d,"mb":%q}`, d.f.group, text))
	api := d.apis[(d.next.Add(1)-1)%uint64(len(d.apis))]
	req, err := http.NewRequest("POST", api, strings.NewReader(form.Encode()))
	if err != nil {
		s.err = err
		return s
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(d.user, d.pass)
	resp, err := d.client.Do(req)
	s.answer = time.Now()
	if err != nil {
		s.err = err
		return s
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	s.status = resp.StatusCode
	s.mid, _ = strconv.ParseUint(resp.Header.Get("X-GC-MID"), 10, 64)
	return s
}

// outcomes reads gchd_delivery_attempts_total by outcome, summed over the
// servers; nil if one of them did not answer (a partial sum would read as
// a drop).
func (d *driver) outcomes() map[string]float64 {
	return sumCounters(d.metrics, `gchd_delivery_attempts_total{outcome="`, `"} `)
}

// pct returns the q-quantile (nearest rank) of ds; it sorts ds.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(math.Ceil(q*float64(len(ds)))) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// procTicks returns a process's utime+stime in clock ticks, 0 if unknown.
func procTicks(pid int) int64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	fields := strings.Fields(s[i+2:])
	if len(fields) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return u + st
}

// rcvbufErrors returns the Udp RcvbufErrors counter of /proc/net/snmp.
func rcvbufErrors() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var hdr []string
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "Udp: ") {
			continue
		}
		f := strings.Fields(line)
		if hdr == nil {
			hdr = f
			continue
		}
		for i, h := range hdr {
			if h == "RcvbufErrors" && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				return v
			}
		}
	}
	return 0
}
