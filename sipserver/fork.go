package sipserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// forkCall is one request sent to every target at once (parallel
// forking): it answers the sender with the first 2xx, or with the best
// final response when no branch succeeds (unless onFail, given that
// response or nil when there was none, returns another answer). INVITE
// branches still ringing when one answers, when the sender cancels or when
// InviteTimeout passes are cancelled.
type forkCall struct {
	s           *Server
	req         *sip.Request
	tx          sip.ServerTransaction
	targets     []target
	recordRoute bool
	onFail      func(best *sip.Response) *sip.Response

	start     time.Time
	isInvite  bool
	mu        sync.Mutex // orders what is relayed upstream
	finalSent bool

	forks   []*sip.Request
	txs     []sip.ClientTransaction
	done    []bool
	results chan branchResult
}

// branchResult is a branch's final response, or why there is none.
type branchResult struct {
	i   int
	res *sip.Response
	err error
}

// fork forwards req to targets and returns the answer for the sender, or
// nil when one was relayed.
func (s *Server) fork(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, targets []target, recordRoute bool,
	onFail func(best *sip.Response) *sip.Response) *sip.Response {
	f := &forkCall{s: s, req: req, tx: tx, targets: targets, recordRoute: recordRoute, onFail: onFail,
		start: time.Now(), isInvite: req.IsInvite(),
		forks: make([]*sip.Request, len(targets)), txs: make([]sip.ClientTransaction, len(targets)),
		done: make([]bool, len(targets)), results: make(chan branchResult, len(targets))}
	return f.run(ctx)
}

func (f *forkCall) run(ctx context.Context) *sip.Response {
	sendCtx, cancelSends := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSends()
	key := loopKey(f.req)
	for i, t := range f.targets {
		f.send(sendCtx, i, t, key)
	}
	canceled := make(chan struct{})
	var cancelOnce sync.Once
	f.tx.OnCancel(func(*sip.Request) { cancelOnce.Do(func() { close(canceled) }) })
	var timerC <-chan time.Time
	if f.isInvite {
		t := time.NewTimer(f.s.opts.InviteTimeout)
		defer t.Stop()
		timerC = t.C
	}

	var best *sip.Response
	var lastErr error
	for pending := len(f.targets); pending > 0; {
		select {
		case <-canceled:
			f.cancelBranches()
			canceled = nil
		case <-timerC:
			f.cancelBranches()
			timerC = nil
		case r := <-f.results:
			pending--
			f.done[r.i] = true
			if r.res == nil {
				lastErr = r.err
				continue
			}
			if r.res.IsSuccess() {
				if f.relayFinal(r.res) {
					f.cancelBranches()
				}
				if !f.isInvite {
					return nil // the other branches finish on their own
				}
				continue
			}
			if best == nil || betterResponse(r.res, best) {
				best = r.res
			}
		}
	}
	return f.settle(best, lastErr)
}

// send starts the branch to target i; its responses arrive on results.
func (f *forkCall) send(ctx context.Context, i int, t target, key string) {
	s := f.s
	fw := s.forward(f.req, t, f.recordRoute)
	f.forks[i] = fw
	ctl, err := s.cli.TransactionRequest(ctx, fw, s.addVia(key, f.req))
	s.metrics.SIPRequestSent(string(f.req.Method))
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("sip request sent", "method", string(fw.Method), "call_id", callID(fw), "from", fromAddress(fw),
			"to", toAddress(fw), "destination", fw.Destination(), "transport", fw.Transport(), "error", err)
	}
	if err != nil {
		f.results <- branchResult{i: i, err: err}
		return
	}
	f.txs[i] = ctl
	if f.isInvite {
		ctl.OnRetransmission(func(r *sip.Response) {
			if r.IsSuccess() {
				f.relay(r) // RFC 6026: every 2xx of an INVITE goes upstream
			}
		})
	}
	s.tasks.Go(func(ctx context.Context) { f.watch(ctx, i, ctl) })
}

// watch waits for branch i's final response, relaying its provisional
// ones, until the transaction or the server ends.
func (f *forkCall) watch(ctx context.Context, i int, ctl sip.ClientTransaction) {
	method := string(f.req.Method)
	for {
		select {
		case r := <-ctl.Responses():
			if r.IsProvisional() {
				if r.StatusCode > 100 && f.isInvite {
					f.mu.Lock()
					if !f.finalSent {
						f.relay(r)
					}
					f.mu.Unlock()
				}
				continue
			}
			f.s.metrics.SIPResponseReceived(method, r.StatusCode, time.Since(f.start))
			if !f.isInvite {
				// Done with it. sipgo would keep the finished
				// transaction 32 s (its Timer D, where RFC 3261 has
				// Timer K, 5 s) to absorb retransmitted answers; the
				// unhandled-response handler drops those just as well
				// (relayStray), and the transactions kept grew the live
				// heap by gigabytes under a steady relay.
				ctl.Terminate()
			}
			f.results <- branchResult{i: i, res: r}
			return
		case <-ctl.Done():
			f.s.metrics.SIPResponseReceived(method, 0, time.Since(f.start))
			f.results <- branchResult{i: i, err: ctl.Err()}
			return
		case <-ctx.Done():
			ctl.Terminate()
			f.results <- branchResult{i: i, err: ctx.Err()}
			return
		}
	}
}

// relayFinal relays a 2xx and reports whether it was the first final
// answer.
func (f *forkCall) relayFinal(r *sip.Response) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	first := !f.finalSent
	f.finalSent = true
	f.relay(r)
	return first
}

// settle answers the sender when every branch ended without a 2xx.
func (f *forkCall) settle(best *sip.Response, lastErr error) *sip.Response {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.finalSent {
		return nil
	}
	f.finalSent = true
	if f.onFail != nil {
		if res := f.onFail(best); res != nil {
			return res
		}
	}
	if best != nil {
		f.relay(best)
		return nil
	}
	if lastErr != nil {
		f.s.log.Debug("every branch failed", "method", f.req.Method, "call_id", callID(f.req), "error", lastErr)
	}
	return newResponse(f.req, 408, "Request Timeout")
}

// relay sends a branch's response upstream, without our Via.
func (f *forkCall) relay(r *sip.Response) {
	s := f.s
	r = r.Clone()
	r.RemoveHeader("Via")
	r.SetDestination(f.req.Source())
	r.SetTransport(f.req.Transport())
	// tx answers as every answer is sent (ingress/respond.go): a final
	// answer to a non-INVITE over UDP is kept for retransmissions there.
	err := f.tx.Respond(r)
	if err != nil {
		s.log.Debug("relay response", "code", r.StatusCode, "call_id", callID(f.req), "error", err)
	}
	s.debugAnswer(f.req, r, err)
	if r.StatusCode >= 200 {
		s.metrics.SIPResponseSent(string(f.req.Method), r.StatusCode, time.Since(f.start))
	}
}

// cancelBranches cancels the INVITE branches still pending.
func (f *forkCall) cancelBranches() {
	if !f.isInvite {
		return
	}
	for i, fw := range f.forks {
		if f.done[i] || f.txs[i] == nil {
			continue
		}
		f.s.tasks.Go(func(ctx context.Context) { f.s.cancelBranch(ctx, fw) })
	}
}

// betterResponse picks the final response to relay when no branch
// succeeded (RFC 3261 16.7 step 6): a 6xx wins, else the lowest class; 503
// becomes 500 upstream would be stricter, but phones read either.
func betterResponse(a, b *sip.Response) bool {
	if b.StatusCode >= 600 {
		return false
	}
	if a.StatusCode >= 600 {
		return true
	}
	return a.StatusCode/100 < b.StatusCode/100
}

// cancelBranch sends CANCEL for a forwarded INVITE (same Request-URI, top
// Via and CSeq number, RFC 3261 9.1).
func (s *Server) cancelBranch(ctx context.Context, f *sip.Request) {
	c := sip.NewRequest(sip.CANCEL, *f.Recipient.Clone())
	c.AppendHeader(sip.HeaderClone(f.Via()))
	mf := sip.MaxForwardsHeader(70)
	c.AppendHeader(&mf)
	c.AppendHeader(sip.HeaderClone(f.From()))
	c.AppendHeader(sip.HeaderClone(f.To()))
	c.AppendHeader(sip.HeaderClone(f.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: f.CSeq().SeqNo, MethodName: sip.CANCEL})
	sip.CopyHeaders("Route", f, c)
	c.SetTransport(f.Transport())
	c.SetDestination(f.Destination())
	c.Laddr = f.Laddr
	c.SetBody(nil)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s.metrics.SIPRequestSent(string(sip.CANCEL))
	if _, err := s.cli.Do(ctx, c, func(*sipgo.Client, *sip.Request) error { return nil }); err != nil {
		s.log.Debug("cancel branch", "call_id", callID(f), "error", err)
	}
}
