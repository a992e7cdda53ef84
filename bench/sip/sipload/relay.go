package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit/sipua"
)

// ---------------------------------------------------------------- relay

// relay measures a MESSAGE from one phone to another: a UAC that sends to
// -server, and users registered at -uas-server that answer 200. With two
// nodes of a cluster the MESSAGE crosses from one to the other (handed over
// node to node over SIP); with one server it is the plain proxy path. The
// UAC's source must be in gchd's sip.trusted: it sends without digest, as
// the SIPp msg test does.

type relayFlags struct {
	phoneFlags
	uasServer  string
	uacListen  string
	users      string
	passwords  string
	count      int
	from       string
	rates      string
	dur        time.Duration
	warmup     time.Duration
	drain      time.Duration
	cooldown   time.Duration
	minAch     float64
	pids       string
	dbProc     string
	metricsURL string
	inflight   int
}

func runRelay(args []string) error {
	fs := flag.NewFlagSet("relay", flag.ExitOnError)
	var f relayFlags
	f.register(fs)
	fs.StringVar(&f.uasServer, "uas-server", "", "where the targets register (empty: -server); another node for a relayed MESSAGE")
	fs.StringVar(&f.uacListen, "uac-listen", "127.0.0.1:5094", "the sending phone's socket")
	fs.StringVar(&f.users, "users", "user%05d", "targets' login pattern; they are registered at -listen")
	fs.StringVar(&f.passwords, "passwords", "pass%05d", "targets' password pattern")
	fs.IntVar(&f.count, "count", 100, "targets (first..first+count-1), messaged in turn")
	fs.StringVar(&f.from, "from", "sender", "the From user of the MESSAGEs")
	fs.StringVar(&f.rates, "rates", "200", "comma-separated MESSAGEs/s to run in order (stops at the first failure)")
	fs.DurationVar(&f.dur, "dur", 8*time.Second, "duration of each step")
	fs.DurationVar(&f.warmup, "warmup", 3*time.Second, "untracked warm-up at half the first rate (0: none)")
	fs.DurationVar(&f.drain, "drain", 2*time.Second, "time after the last send for the answers to come")
	fs.DurationVar(&f.cooldown, "cooldown", 2*time.Second, "pause between steps")
	fs.Float64Var(&f.minAch, "min-achieved", 0.97, "a step passes only if this share of the target rate was answered 200")
	fs.StringVar(&f.pids, "pid", "", "gchd's process id, or comma-separated ids, for the server CPU (summed, and each)")
	fs.StringVar(&f.dbProc, "db-proc", "", "also count the CPU of every process of this name (postgres)")
	fs.StringVar(&f.metricsURL, "metrics", "", "comma-separated gchd metrics URLs: MESSAGEs handed between nodes, summed")
	fs.IntVar(&f.inflight, "inflight", 2000, "most MESSAGEs awaiting an answer")
	fs.Parse(args)
	if f.listen == "127.0.0.1:5090" {
		f.listen = "127.0.0.1:5093"
	}
	if f.uasServer == "" {
		f.uasServer = f.server
	}
	pids, err := parsePIDs(f.pids)
	if err != nil {
		return err
	}

	uf := f.phoneFlags
	uf.server = f.uasServer
	uas, err := newPhones(uf, nil)
	if err != nil {
		return err
	}
	defer uas.close()
	if err := uas.registerAll(f.users, f.passwords, numbers(f.first, f.count)); err != nil {
		return err
	}
	fmt.Printf("# registered %d targets over %s at %s with %s\n", f.count, strings.ToUpper(f.transport), f.listen, f.uasServer)

	uac, err := newUAC(f)
	if err != nil {
		return err
	}
	defer uac.Close()
	r := &relayer{f: f, uac: uac, uas: uas, cpu: newCPUMeter(pids, f.dbProc), metrics: splitList(f.metricsURL)}
	var rates []int
	for _, s := range splitList(f.rates) {
		rate, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("rates: %w", err)
		}
		rates = append(rates, rate)
	}
	if len(rates) == 0 {
		return fmt.Errorf("no rates")
	}
	if f.warmup > 0 {
		w := r.run(max(10, rates[0]/2), f.warmup)
		fmt.Printf("# warm-up %s at %d/s done (%s)\n", f.warmup, w.rate, map[bool]string{true: "ok", false: "NOT ok"}[w.pass])
		time.Sleep(f.cooldown)
	}
	for _, rate := range rates {
		res := r.run(rate, f.dur)
		fmt.Println(res)
		time.Sleep(f.cooldown)
		if !res.pass {
			break
		}
	}
	return nil
}

// newUAC is the sending phone: a UDP socket of its own, every request to
// -server.
func newUAC(f relayFlags) (*sipua.Phone, error) {
	host, _, err := net.SplitHostPort(f.uacListen)
	if err != nil {
		return nil, err
	}
	p, err := sipua.New(strings.ToUpper(f.transport), f.server, sipua.WithName("sipload"), sipua.WithHostname(f.domain),
		sipua.WithClientHost(host), sipua.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return nil, err
	}
	if strings.ToUpper(f.transport) == "UDP" {
		if err := p.ListenUDP(f.uacListen); err != nil {
			p.Close()
			return nil, err
		}
		if err := p.ServeUDP(); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

type relayer struct {
	f       relayFlags
	uac     *sipua.Phone
	uas     *phones
	cpu     *cpuMeter
	metrics []string
	seq     int
}

type relayResult struct {
	rate                int
	sent, ok, other     int
	errs                int
	received            int64
	achieved            float64
	p50, p99            time.Duration
	cpu                 cpuUse
	relayedOut, relayIn float64
	pass                bool
	firstErr            string
}

func (r relayResult) String() string {
	s := fmt.Sprintf("relay rate=%5d achieved=%7.1f/s sent=%6d 200=%6d other=%d errors=%d received=%d tx p50=%.1fms p99=%.1fms srvCPU=%5.1f%%",
		r.rate, r.achieved, r.sent, r.ok, r.other, r.errs, r.received, ms(r.p50), ms(r.p99), r.cpu.total)
	s += r.cpu.perTransaction("msg", r.ok)
	if r.relayedOut >= 0 {
		s += fmt.Sprintf(" relayed[out=%.0f in=%.0f]", r.relayedOut, r.relayIn)
	}
	if r.firstErr != "" {
		s += " first-error=" + strconv.Quote(r.firstErr)
	}
	if r.pass {
		return s + "  PASS"
	}
	return s + "  FAIL"
}

// relayedMessages reads gchd_sip_relayed_total of MESSAGE, by direction.
func (r *relayer) relayedMessages() map[string]float64 {
	return sumCounters(r.metrics, `gchd_sip_relayed_total{direction="`, `",method="MESSAGE"} `)
}

// run sends MESSAGEs at rate for dur, to the targets in turn, and waits for
// their answers.
func (r *relayer) run(rate int, dur time.Duration) relayResult {
	n := int(float64(rate) * dur.Seconds())
	res := relayResult{rate: rate, sent: n, relayedOut: -1}
	r.seq++
	rel0 := r.relayedMessages()
	recv0 := r.uas.received.Load()
	cpu0 := r.cpu.read()
	lat := make([]time.Duration, n)
	codes := make([]int, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(1, r.f.inflight))
	var skipped atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), dur+r.f.drain+30*time.Second)
	defer cancel()
	t0 := time.Now()
	interval := time.Duration(float64(time.Second) / float64(rate))
	for i := 0; i < n; i++ {
		at := t0.Add(time.Duration(i) * interval)
		if w := time.Until(at); w > 0 {
			time.Sleep(w)
		}
		select {
		case sem <- struct{}{}:
		default:
			skipped.Add(1) // too many unanswered: the server is past its rate
			continue
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			target := login(r.f.users, r.f.first+i%r.f.count)
			start := time.Now()
			res, err := r.message(ctx, target, fmt.Sprintf("relay %d.%d", r.seq, i))
			lat[i] = time.Since(start)
			if err != nil {
				errs[i] = err
				return
			}
			codes[i] = res
		}(i)
	}
	sentUntil := time.Now()
	wg.Wait()
	wall := time.Since(t0).Seconds()
	cpu1 := r.cpu.read()
	res.cpu = r.cpu.use(cpu0, cpu1, wall)
	var oks []time.Duration
	for i := 0; i < n; i++ {
		switch {
		case errs[i] != nil:
			res.errs++
			if res.firstErr == "" {
				res.firstErr = errs[i].Error()
			}
		case codes[i] == 200:
			res.ok++
			oks = append(oks, lat[i])
		case codes[i] != 0:
			res.other++
			if res.firstErr == "" {
				res.firstErr = "SIP " + strconv.Itoa(codes[i])
			}
		}
	}
	res.errs += int(skipped.Load())
	if e := sentUntil.Sub(t0).Seconds(); e > 0 {
		res.achieved = float64(res.ok) / e
	}
	res.p50, res.p99 = pct(oks, 0.5), pct(oks, 0.99)
	res.received = r.uas.received.Load() - recv0
	if rel1 := r.relayedMessages(); rel0 != nil && rel1 != nil {
		res.relayedOut, res.relayIn = rel1["out"]-rel0["out"], rel1["in"]-rel0["in"]
	}
	res.pass = res.errs == 0 && res.other == 0 && res.achieved >= r.f.minAch*float64(rate)
	return res
}

// message sends one MESSAGE and returns the final status.
func (r *relayer) message(ctx context.Context, to, body string) (int, error) {
	target := sip.Uri{Scheme: "sip", User: to, Host: r.f.domain}
	req := sip.NewRequest(sip.MESSAGE, target)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: r.f.from, Host: r.f.domain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: target})
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain"))
	req.SetBody([]byte(body))
	r.uac.Prepare(req)
	res, err := r.uac.Client.Do(ctx, req)
	if err != nil {
		return 0, err
	}
	return res.StatusCode, nil
}
