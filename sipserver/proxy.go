package sipserver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"hash/fnv"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/metrics"
	"gchd/registrar"
	"gchd/sipserver/internal/ingress"
)

// target is where one branch of a forwarded request goes.
type target struct {
	ruri      sip.Uri
	transport string // UDP, TCP, TLS, WS, WSS
	dest      string // ip:port of the flow
}

// onProxy routes every request that is not for the registrar itself:
// requests inside a dialog follow their Route set, initial requests from
// authenticated users go to every registered contact of the target user.
func (s *Server) onProxy(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return newResponse(req, 483, "Too Many Hops")
	}
	if s.looped(req) {
		return newResponse(req, 482, "Loop Detected")
	}
	if to := req.To(); to != nil && to.Params.Has("tag") {
		return s.proxyInDialog(ctx, req, tx)
	}
	if !s.isOurDomain(req.Recipient.Host) {
		return newResponse(req, 403, "Relaying Forbidden")
	}
	from := req.From()
	if from == nil {
		return newResponse(req, 400, "Missing From")
	}
	sender := from.Address.User
	identity := "" // the login the request proved, when it had to
	if !s.trusted(req) {
		acc, challenge := s.authenticate(ctx, req)
		if challenge != nil {
			return challenge
		}
		if sender != acc.Login || !s.isOurDomain(from.Address.Host) {
			s.metrics.SIPAuthFailure(metrics.AuthUserMismatch)
			return newResponse(req, 403, "Forbidden: From Does Not Match Credentials")
		}
		identity = acc.Login
	}
	user := req.Recipient.User
	if user == "" {
		return newResponse(req, 404, "Not Found")
	}
	if isGroupUser(user) {
		return s.onGroupRequest(ctx, req, sender)
	}
	if _, err := s.accounts.Lookup(ctx, user); err != nil {
		if errors.Is(err, registrar.ErrNoAccount) {
			return newResponse(req, 404, "Not Found")
		}
		return s.refuse(req, err, "look up account", "user", user)
	}
	targets := s.targetsOf(user)
	var onFail func(best *sip.Response) *sip.Response
	if req.Method == sip.MESSAGE {
		// A user with no device that answers gets the message when one
		// registers (store and forward).
		if len(targets) == 0 {
			return s.storeForLater(ctx, req, sender, user)
		}
		onFail = func(best *sip.Response) *sip.Response {
			if best == nil || best.StatusCode == 408 || best.StatusCode == 480 || best.StatusCode == 503 {
				return s.storeForLater(ctx, req, sender, user)
			}
			return nil
		}
	}
	if len(targets) == 0 {
		return newResponse(req, 480, "Temporarily Unavailable")
	}
	s.sanitize(req, identity)
	return s.fork(ctx, req, tx, targets, dialogCreating(req.Method), onFail)
}

// dialogCreating reports whether a method starts a dialog, so that the
// proxy stays on its path (Record-Route).
func dialogCreating(m sip.RequestMethod) bool {
	return m == sip.INVITE || m == sip.SUBSCRIBE || m == sip.REFER
}

// targetsOf lists the reachable contacts of a user, each with its flow. A
// device asleep is left out: it was sent a push, and a MESSAGE for it is
// stored until it registers again.
func (s *Server) targetsOf(user string) []target {
	var out []target
	for _, b := range s.reg.Lookup(user) {
		if b.Asleep {
			continue
		}
		if t, ok := s.targetOf(b); ok {
			out = append(out, t)
		}
	}
	return out
}

// targetOf turns a binding into a target over its flow. A connection-held
// binding whose connection is gone is no target: behind NAT it cannot be
// dialed back.
func (s *Server) targetOf(b registrar.Binding) (target, bool) {
	var u sip.Uri
	if err := sip.ParseUri(b.URI, &u); err != nil {
		return target{}, false
	}
	if b.Reliable() && b.Node == s.reg.Policy().Node && !s.flowAlive(b.Transport, b.Source) {
		return target{}, false
	}
	dest := b.Source
	if !b.NAT && !b.Reliable() {
		port := u.Port
		if port == 0 {
			port = sip.DefaultPort(b.Transport)
		}
		dest = net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port))
	}
	return target{ruri: u, transport: b.Transport, dest: dest}, true
}

// flowAlive reports whether a connection from source over transport is open.
func (s *Server) flowAlive(transport, source string) bool {
	c, err := s.ua.TransportLayer().GetConnection(sip.NetworkToLower(transport), source)
	if err != nil {
		return false
	}
	c.TryClose() // GetConnection took a reference
	return true
}

// proxyInDialog forwards a request that belongs to a dialog. A request
// that carries our signed Record-Route entry follows it without a
// challenge: the dialog was authorised when it was set up. Anything else
// with a To tag is authenticated like a new request: a made-up To tag must
// not open a way around authentication.
func (s *Server) proxyInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	t, signed, refusal := s.inDialogTarget(req)
	identity := ""
	if !signed && !s.trusted(req) {
		acc, challenge := s.authenticate(ctx, req)
		if challenge != nil {
			return challenge
		}
		if from := req.From(); from == nil || from.Address.User != acc.Login {
			s.metrics.SIPAuthFailure(metrics.AuthUserMismatch)
			return newResponse(req, 403, "Forbidden: From Does Not Match Credentials")
		}
		identity = acc.Login
	}
	if refusal != "" {
		code := 404
		if refusal != "Not Found" {
			code = 403
		}
		return newResponse(req, code, refusal)
	}
	s.sanitize(req, identity)
	return s.fork(ctx, req, tx, []target{t}, false, nil)
}

// inDialogTarget strips our own Route entries and finds the next hop: the
// flow named by the signed token of the last of them, else the registered
// contact that the Request-URI names. It reports whether a valid token was
// there, or why there is no target. gchd routes only to its own users: a
// Route to anywhere else is refused (no open relay).
func (s *Server) inDialogTarget(req *sip.Request) (t target, signed bool, refusal string) {
	var flow string
	for r := req.Route(); r != nil && s.isUs(r.Address); r = req.Route() {
		if v, ok := r.Address.UriParams.Get(flowParam); ok {
			flow = v
		}
		req.RemoveHeader("Route")
	}
	if flow != "" {
		if transport, source, ok := s.openFlowToken(flow, callID(req)); ok {
			signed = true
			if req.Route() == nil {
				return target{ruri: req.Recipient, transport: transport, dest: source}, true, ""
			}
		}
	}
	if req.Route() != nil {
		return target{}, signed, "Relaying Forbidden"
	}
	if b, ok := s.reg.LookupURI(req.Recipient.String()); ok {
		if t, ok := s.targetOf(b); ok {
			t.ruri = req.Recipient
			return t, signed, ""
		}
	}
	if s.isOurDomain(req.Recipient.Host) && req.Recipient.User != "" {
		if ts := s.targetsOf(req.Recipient.User); len(ts) > 0 {
			ts[0].ruri = req.Recipient
			return ts[0], signed, ""
		}
	}
	return target{}, signed, "Not Found"
}

// flowParam carries a signed flow token in our Record-Route URIs (RFC 5626
// section 5.3): requests later in the dialog go back over that flow even
// when the phone's Contact is unreachable.
const flowParam = "gchd-flow"

// flowToken signs a flow for one dialog (its Call-ID): a token seen in one
// dialog opens no way into another.
func (s *Server) flowToken(transport, source, callID string) string {
	payload := transport + "|" + source
	return base64.RawURLEncoding.EncodeToString(append([]byte(payload), s.flowMAC(payload, callID)...))
}

func (s *Server) flowMAC(payload, callID string) []byte {
	m := hmac.New(sha256.New, s.auth.secret)
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return m.Sum(nil)[:12]
}

func (s *Server) openFlowToken(tok, callID string) (transport, source string, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) <= 12 {
		return "", "", false
	}
	payload, mac := b[:len(b)-12], b[len(b)-12:]
	if !hmac.Equal(mac, s.flowMAC(string(payload), callID)) {
		return "", "", false
	}
	transport, source, ok = strings.Cut(string(payload), "|")
	return transport, source, ok
}

// recordRoute is our Record-Route entry facing one side of a dialog.
func (s *Server) recordRoute(transport, flowSource, callID string) *sip.RecordRouteHeader {
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme: "sip", Host: s.opts.Advertise, Port: s.ports[strings.ToUpper(transport)],
		UriParams: sip.HeaderParams{
			{K: "transport", V: strings.ToLower(transport)},
			{K: "lr", V: ""},
			{K: flowParam, V: s.flowToken(strings.ToUpper(transport), flowSource, callID)},
		},
	}}
}

// loopKey identifies a request for loop detection (RFC 3261 16.3 step 4):
// the same request coming back with our Via on it is a loop, the same
// dialog with another Request-URI is a spiral.
func loopKey(req *sip.Request) string {
	h := fnv.New64a()
	h.Write([]byte(req.Recipient.String()))
	if f := req.From(); f != nil {
		h.Write([]byte(f.Params.GetOr("tag", "")))
	}
	h.Write([]byte(callID(req)))
	if c := req.CSeq(); c != nil {
		h.Write([]byte(strconv.FormatUint(uint64(c.SeqNo), 10)))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

const branchMagic = "z9hG4bK-gc"

// looped reports whether req already passed through us unchanged.
func (s *Server) looped(req *sip.Request) bool {
	key := branchMagic + loopKey(req) + "-"
	for h := range headersNamed(req, "Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		if b, _ := v.Params.Get("branch"); strings.HasPrefix(b, key) && s.isUs(sip.Uri{Host: v.Host, Port: v.Port}) {
			return true
		}
	}
	return false
}

// addVia is a sipgo request option: our Via with a branch that carries the
// loop key and the signed flow of the request's sender (branchToken), and
// rport/received on the previous hop (RFC 3581).
func (s *Server) addVia(key string, from *sip.Request) sipgo.ClientRequestOption {
	upTransport, upSource := strings.ToUpper(from.Transport()), from.Source()
	return func(c *sipgo.Client, r *sip.Request) error {
		if via := r.Via(); via != nil && via.Params.Has("rport") {
			host, port, err := sip.ParseAddr(upSource)
			if err == nil {
				via.Params.Add("rport", strconv.Itoa(port))
				via.Params.Add("received", host)
			}
		}
		v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: r.Transport(), Host: s.opts.Advertise,
			Params: sip.NewParams()}
		v.Params.Add("branch", s.branch(key, upTransport, upSource, callID(r)))
		r.PrependHeader(v)
		return nil
	}
}

// branch makes the branch of a request gchd forwards from source over
// transport: the magic cookie and loop key (looped), a random part that
// makes it unique, and a token that signs the sender's flow for the
// request's Call-ID. A response that arrives after its client transaction
// ended (relayStray) is relayed only when its branch carries a valid
// token, and only to the flow the token names: a forged response with our
// branch prefix and a second Via naming a victim reaches nobody.
func (s *Server) branch(key, transport, source, callID string) string {
	payload := transport + "|" + source
	mac := s.branchMAC(payload, callID)
	return branchMagic + key + "-" + sip.GenerateBranchN(12)[len("z9hG4bK."):] + "." +
		base64.RawURLEncoding.EncodeToString(append([]byte(payload), mac...))
}

// branchFlow returns the flow a branch made by branch names, when its
// token is valid for callID.
func (s *Server) branchFlow(branch, callID string) (transport, source string, ok bool) {
	if !strings.HasPrefix(branch, branchMagic) {
		return "", "", false
	}
	_, tok, found := strings.Cut(branch[len(branchMagic):], ".")
	if !found {
		return "", "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) <= 12 {
		return "", "", false
	}
	payload, mac := raw[:len(raw)-12], raw[len(raw)-12:]
	if !hmac.Equal(mac, s.branchMAC(string(payload), callID)) {
		return "", "", false
	}
	return strings.Cut(string(payload), "|")
}

// branchMAC signs a branch's flow; its input starts with "branch", which
// no Record-Route token's payload (a transport name) does, so neither
// token passes for the other.
func (s *Server) branchMAC(payload, callID string) []byte {
	m := hmac.New(sha256.New, s.auth.secret)
	m.Write([]byte("branch\x00"))
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return m.Sum(nil)[:12]
}

// forward builds the request for one branch: a copy with the target's
// Request-URI and flow, Max-Forwards decremented and, for dialogs, our
// Record-Route on both sides.
func (s *Server) forward(req *sip.Request, t target, recordRoute bool) *sip.Request {
	f := req.Clone()
	f.Recipient = *t.ruri.Clone()
	f.SetTransport(t.transport)
	f.SetDestination(t.dest)
	if t.transport == "UDP" && s.udp != nil {
		// Send from the listening socket, the address the phone's NAT knows.
		a := s.udp.LocalAddr().(*net.UDPAddr)
		f.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	}
	// sipgo's Clone shares the Max-Forwards header between copies: replace
	// it rather than decrement it.
	mf := sip.MaxForwardsHeader(70)
	if m := req.MaxForwards(); m != nil {
		mf = sip.MaxForwardsHeader(m.Val() - 1)
	}
	f.ReplaceHeader(&mf)
	if recordRoute {
		f.PrependHeader(s.recordRoute(strings.ToUpper(req.Transport()), req.Source(), callID(req)))
		f.PrependHeader(s.recordRoute(t.transport, t.dest, callID(req)))
	}
	return f
}

// branchResult is a branch's final response, or why there is none.
type branchResult struct {
	i   int
	res *sip.Response
	err error
}

// fork sends req to every target at once (parallel forking) and answers
// the sender with the first 2xx, or with the best final response when no
// branch succeeds (unless onFail, given that response or nil when there was
// none, returns another answer). INVITE branches still ringing when one
// answers, when the sender cancels or when InviteTimeout passes are
// cancelled.
func (s *Server) fork(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, targets []target, recordRoute bool,
	onFail func(best *sip.Response) *sip.Response) *sip.Response {
	start := time.Now()
	isInvite := req.IsInvite()
	upstream, upTransport := req.Source(), req.Transport()
	var relayMu sync.Mutex
	finalSent := false
	// tx answers as every answer is sent (ingress/respond.go): a final
	// answer to a non-INVITE over UDP is kept for retransmissions there.
	relay := func(r *sip.Response) {
		r = r.Clone()
		r.RemoveHeader("Via")
		r.SetDestination(upstream)
		r.SetTransport(upTransport)
		err := tx.Respond(r)
		if err != nil {
			s.log.Debug("relay response", "code", r.StatusCode, "call_id", callID(req), "error", err)
		}
		s.debugAnswer(req, r, err)
		if r.StatusCode >= 200 {
			s.metrics.SIPResponseSent(string(req.Method), r.StatusCode, time.Since(start))
		}
	}

	forks := make([]*sip.Request, len(targets))
	txs := make([]sip.ClientTransaction, len(targets))
	results := make(chan branchResult, len(targets))
	key := loopKey(req)
	sendCtx, cancelSends := context.WithTimeout(ctx, 10*time.Second)
	defer cancelSends()
	for i, t := range targets {
		f := s.forward(req, t, recordRoute)
		forks[i] = f
		ctl, err := s.cli.TransactionRequest(sendCtx, f, s.addVia(key, req))
		s.metrics.SIPRequestSent(string(req.Method))
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("sip request sent", "method", string(f.Method), "call_id", callID(f), "from", fromAddress(f),
				"to", toAddress(f), "destination", f.Destination(), "transport", f.Transport(), "error", err)
		}
		if err != nil {
			results <- branchResult{i: i, err: err}
			continue
		}
		txs[i] = ctl
		if isInvite {
			ctl.OnRetransmission(func(r *sip.Response) {
				if r.IsSuccess() {
					relay(r) // RFC 6026: every 2xx of an INVITE goes upstream
				}
			})
		}
		go func(i int, ctl sip.ClientTransaction) {
			for {
				select {
				case r := <-ctl.Responses():
					if r.IsProvisional() {
						if r.StatusCode > 100 && isInvite {
							relayMu.Lock()
							if !finalSent {
								relay(r)
							}
							relayMu.Unlock()
						}
						continue
					}
					s.metrics.SIPResponseReceived(string(req.Method), r.StatusCode, time.Since(start))
					if !isInvite {
						// Done with it. sipgo would keep the finished
						// transaction 32 s (its Timer D, where RFC 3261
						// has Timer K, 5 s) to absorb retransmitted
						// answers; the unhandled-response handler drops
						// those just as well (relayStray), and the
						// transactions kept grew the live heap by
						// gigabytes under a steady relay.
						ctl.Terminate()
					}
					results <- branchResult{i: i, res: r}
					return
				case <-ctl.Done():
					s.metrics.SIPResponseReceived(string(req.Method), 0, time.Since(start))
					results <- branchResult{i: i, err: ctl.Err()}
					return
				}
			}
		}(i, ctl)
	}

	done := make([]bool, len(targets))
	cancelBranches := func() {
		if !isInvite {
			return
		}
		for i, f := range forks {
			if done[i] || txs[i] == nil {
				continue
			}
			go s.cancelBranch(f)
		}
	}
	canceled := make(chan struct{})
	var cancelOnce sync.Once
	tx.OnCancel(func(*sip.Request) { cancelOnce.Do(func() { close(canceled) }) })
	var timerC <-chan time.Time
	if isInvite {
		t := time.NewTimer(s.opts.InviteTimeout)
		defer t.Stop()
		timerC = t.C
	}

	var best *sip.Response
	var lastErr error
	for pending := len(targets); pending > 0; {
		select {
		case <-canceled:
			cancelBranches()
			canceled = nil
		case <-timerC:
			cancelBranches()
			timerC = nil
		case r := <-results:
			pending--
			done[r.i] = true
			if r.res == nil {
				lastErr = r.err
				continue
			}
			if r.res.IsSuccess() {
				relayMu.Lock()
				first := !finalSent
				finalSent = true
				relay(r.res)
				relayMu.Unlock()
				if first {
					cancelBranches()
				}
				if !isInvite {
					return nil // the other branches finish on their own
				}
				continue
			}
			if best == nil || betterResponse(r.res, best) {
				best = r.res
			}
		}
	}
	relayMu.Lock()
	defer relayMu.Unlock()
	if finalSent {
		return nil
	}
	if onFail != nil {
		if res := onFail(best); res != nil {
			finalSent = true
			return res
		}
	}
	if best != nil {
		finalSent = true
		relay(best)
		return nil
	}
	if lastErr != nil {
		s.log.Debug("every branch failed", "method", req.Method, "call_id", callID(req), "error", lastErr)
	}
	finalSent = true
	return newResponse(req, 408, "Request Timeout")
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
func (s *Server) cancelBranch(f *sip.Request) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.metrics.SIPRequestSent(string(sip.CANCEL))
	if _, err := s.cli.Do(ctx, c, func(*sipgo.Client, *sip.Request) error { return nil }); err != nil {
		s.log.Debug("cancel branch", "call_id", callID(f), "error", err)
	}
}

// onAck forwards the ACK of a 2xx along the dialog's route; the ACK of a
// non-2xx ends at us (sipgo absorbs it on UDP; on TCP it arrives here).
func (s *Server) onAck(req *sip.Request, tx sip.ServerTransaction) {
	s.metrics.SIPRequestReceived(string(req.Method))
	if to := req.To(); to == nil || !to.Params.Has("tag") {
		return
	}
	if r := req.Route(); r == nil || !s.isUs(r.Address) {
		return // hop-by-hop ACK of a response we sent
	}
	t, signed, refusal := s.inDialogTarget(req)
	if !signed || refusal != "" {
		return // an ACK cannot be challenged: without our route it goes nowhere
	}
	s.sanitize(req, "")
	f := s.forward(req, t, false)
	if err := s.cli.WriteRequest(f, s.addVia(loopKey(req), req)); err != nil {
		s.log.Debug("forward ACK", "call_id", callID(req), "error", err)
	}
	s.metrics.SIPRequestSent(string(sip.ACK))
}

// relayStray forwards 2xx retransmissions of an INVITE that reach us after
// the client transaction ended (RFC 6026), statelessly, to the flow of the
// INVITE's sender that our branch signs (branch). The Via path below ours
// is not followed: anyone can send a response, and its Vias say anything.
func (s *Server) relayStray(r *sip.Response) {
	if !r.IsSuccess() || r.CSeq() == nil || r.CSeq().MethodName != sip.INVITE {
		return
	}
	via, cid := r.Via(), r.CallID()
	if via == nil || cid == nil {
		return
	}
	b, _ := via.Params.Get("branch")
	transport, source, ok := s.branchFlow(b, cid.Value())
	if !ok {
		s.log.Debug("drop stray 2xx without our signed branch", "call_id", r.CallID(), "branch", b)
		return
	}
	r.RemoveHeader("Via")
	if r.Via() == nil {
		return // no hop left to relay to
	}
	r.SetDestination(source)
	r.SetTransport(transport)
	if err := ingress.Stateless(s.srv, r); err != nil {
		s.log.Debug("relay stray 2xx", "call_id", r.CallID(), "error", err)
	}
}
