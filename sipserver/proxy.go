package sipserver

import (
	"context"
	"errors"

	"strconv"
	"strings"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/metrics"
	"gchd/registrar"
	"gchd/sipserver/internal/ingress"
)

// onProxy routes every request that is not for the registrar itself:
// requests inside a dialog follow their Route set, initial requests from
// authenticated users go to every registered contact of the target user.
func (s *Server) onProxy(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	if mf := req.MaxForwards(); mf != nil && mf.Val() == 0 {
		return newResponse(req, 483, "Too Many Hops")
	}
	if looped(req, s.isUs) {
		return newResponse(req, 482, "Loop Detected")
	}
	if t, relayed, refusal := s.relayedFlow(req); refusal != nil {
		return refusal
	} else if relayed {
		return s.proxyRelayed(ctx, req, tx, t)
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
	targets := s.route.targetsOf(user)
	var onFail func(best *sip.Response) *sip.Response
	if req.Method == sip.MESSAGE {
		// A user with no device that answers gets the message when one
		// registers (store and forward).
		if len(targets) == 0 {
			return s.storeForLater(ctx, req, sender, user)
		}
		onFail = func(best *sip.Response) *sip.Response {
			// 430: the node that held the device's flow has lost it.
			if best == nil || best.StatusCode == 408 || best.StatusCode == 430 || best.StatusCode == 480 || best.StatusCode == 503 {
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

// proxyInDialog forwards a request that belongs to a dialog. A request
// that carries our signed Record-Route entry follows it without a
// challenge: the dialog was authorised when it was set up. Anything else
// with a To tag is authenticated like a new request: a made-up To tag must
// not open a way around authentication.
func (s *Server) proxyInDialog(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	t, signed, refusal := s.route.inDialogTarget(req)
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

// recordRoute is our Record-Route entry facing one side of a dialog.
func (s *Server) recordRoute(transport, flowSource, callID string) *sip.RecordRouteHeader {
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme: "sip", Host: s.opts.Advertise, Port: s.ports[strings.ToUpper(transport)],
		UriParams: sip.HeaderParams{
			{K: "transport", V: strings.ToLower(transport)},
			{K: "lr", V: ""},
			{K: flowParam, V: s.flows.routeToken(strings.ToUpper(transport), flowSource, callID)},
		},
	}}
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
		// With our port: nodes sharing a host tell their Vias apart by it,
		// or a request handed from one to another would look looped.
		v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: r.Transport(), Host: s.opts.Advertise,
			Port: s.ports[strings.ToUpper(r.Transport())], Params: sip.NewParams()}
		v.Params.Add("branch", s.flows.branch(key, upTransport, upSource, callID(r)))
		r.PrependHeader(v)
		return nil
	}
}

// forward builds the request for one branch: a copy with the target's
// Request-URI and flow, Max-Forwards decremented and, for dialogs, our
// Record-Route on both sides.
func (s *Server) forward(req *sip.Request, t target, recordRoute bool) *sip.Request {
	f := req.Clone()
	f.Recipient = *t.ruri.Clone()
	// sipgo's Clone shares the Max-Forwards header between copies: replace
	// it rather than decrement it.
	mf := sip.MaxForwardsHeader(70)
	if m := req.MaxForwards(); m != nil {
		mf = sip.MaxForwardsHeader(m.Val() - 1)
	}
	f.ReplaceHeader(&mf)
	if recordRoute {
		upTransport, upSource := strings.ToUpper(req.Transport()), req.Source()
		if t.back != nil {
			upTransport, upSource = t.back.transport, t.back.dest
		}
		f.PrependHeader(s.recordRoute(upTransport, upSource, callID(req)))
		f.PrependHeader(s.recordRoute(t.transport, t.dest, callID(req)))
	}
	s.aim(f, t) // after our Record-Route: a relay Route goes on top
	if t.relay != nil {
		s.metrics.SIPRelayed(string(req.Method), "out")
	}
	return f
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
	t, signed, refusal := s.route.inDialogTarget(req)
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
func (s *Stack) relayStray(r *sip.Response) {
	if !r.IsSuccess() || r.CSeq() == nil || r.CSeq().MethodName != sip.INVITE {
		return
	}
	via, cid := r.Via(), r.CallID()
	if via == nil || cid == nil {
		return
	}
	b, _ := via.Params.Get("branch")
	transport, source, ok := s.flows.branchFlow(b, cid.Value())
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
