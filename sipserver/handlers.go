package sipserver

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/chat"
	"gchd/sipserver/internal/ingress"
)

// handlerFunc processes one request and returns the final response to
// send, or nil when it has answered itself (the proxy relays responses
// through tx). tx is nil for a request the ingress took in.
type handlerFunc func(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response

// handle adapts a handlerFunc to sipgo. A retransmission of a request
// answered already is answered from the kept answers.
func (s *Server) handle(fn handlerFunc) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		start := s.received(req)
		t, answered := s.in.Transaction(req, tx)
		if answered {
			return
		}
		s.serve(start, req, t, t, fn)
	}
}

// registerHandler serves the REGISTERs the ingress takes in out of what
// sipgo would read: as sipgo's would be, without a transaction.
type registerHandler Server

func (h *registerHandler) ServeRegister(req *sip.Request, w ingress.Responder) {
	s := (*Server)(h)
	s.serve(s.received(req), req, w, nil, s.onRegister)
}

// received counts a request and logs it, and returns when it came.
func (s *Server) received(req *sip.Request) time.Time {
	start := time.Now()
	s.metrics.SIPRequestReceived(string(req.Method))
	s.debugRequest(req)
	return start
}

// serve processes one request with fn, which answers through w: it
// recovers a panic into a 500 (one bad request must not take the server
// down) and sends the response.
func (s *Server) serve(start time.Time, req *sip.Request, w ingress.Responder, tx sip.ServerTransaction, fn handlerFunc) {
	var res *sip.Response
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in SIP handler", "method", req.Method, "call_id", callID(req), "panic", fmt.Sprint(p),
				"stack", string(debug.Stack()))
			res = sip.NewResponseFromRequest(req, 500, "Server Internal Error", nil)
		}
		if res == nil {
			w.Unanswered()
			return
		}
		s.respond(w, req, res, start)
	}()
	if res = s.validate(req); res != nil {
		return
	}
	ctx := sipContext
	if req.Method != sip.REGISTER {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.InviteTimeout+time.Minute)
		defer cancel()
	}
	res = fn(ctx, req, tx)
}

// sipContext is what a request is handled in. A REGISTER gets it without
// a deadline: what it waits for, the account read and the binding's
// commit, is bounded by storage's own timeouts (30 s), shorter than any
// deadline it would get here, and the deadline's timer cost more than
// anything else a refresh allocates.
var sipContext = chat.WithSource(context.Background(), "sip")

// respond sends a response to a request we answer (final or
// provisional), logs it and counts final ones. The proxy relays the
// responses of its branches through it.
func (s *Server) respond(w ingress.Responder, req *sip.Request, res *sip.Response, start time.Time) {
	err := w.Respond(res)
	if err != nil {
		s.log.Debug("send response", "code", res.StatusCode, "method", req.Method, "call_id", callID(req), "error", err)
	}
	s.debugAnswer(req, res, err)
	if res.StatusCode >= 200 {
		s.metrics.SIPResponseSent(string(req.Method), res.StatusCode, time.Since(start))
	}
}

// debugRequest logs a request at debug level: its method, Call-ID,
// the From and To addresses and where it came from. Never its headers
// (Authorization) or its body. The check comes first: a REGISTER refresh
// must not pay for the attributes when debug is off.
func (s *Server) debugRequest(req *sip.Request) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	s.log.Debug("sip request", "method", string(req.Method), "call_id", callID(req), "from", fromAddress(req),
		"to", toAddress(req), "source", req.Source(), "transport", req.Transport())
}

// debugAnswer logs an answer sent to req at debug level, as debugRequest
// logs the request.
func (s *Server) debugAnswer(req *sip.Request, res *sip.Response, err error) {
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"status", res.StatusCode, "reason", res.Reason, "method", string(req.Method), "call_id", callID(req),
		"from", fromAddress(req), "to", toAddress(req), "destination", req.Source(), "transport", req.Transport()}
	if err != nil {
		attrs = append(attrs, "error", err)
	}
	s.log.Debug("sip answer", attrs...)
}

// fromAddress and toAddress return user@host of the From and To: not
// the display name or parameters, and never the password a URI may carry.
func fromAddress(req *sip.Request) string {
	if f := req.From(); f != nil {
		return userAtHost(f.Address)
	}
	return ""
}

func toAddress(req *sip.Request) string {
	if t := req.To(); t != nil {
		return userAtHost(t.Address)
	}
	return ""
}

func userAtHost(u sip.Uri) string {
	if u.User == "" {
		return u.Host
	}
	return u.User + "@" + u.Host
}

// onOptions answers OPTIONS addressed to the server (keep-alives, health
// checks by peers) and proxies those addressed to a user.
func (s *Server) onOptions(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	if req.Recipient.User != "" {
		return s.onProxy(ctx, req, tx) // for a user: ours are proxied, others refused
	}
	res := newResponse(req, 200, "OK")
	res.AppendHeader(sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, MESSAGE, INFO, PRACK, UPDATE, SUBSCRIBE, NOTIFY, REFER, PUBLISH"))
	res.AppendHeader(sip.NewHeader("Accept", "text/plain, application/sdp"))
	res.AppendHeader(sip.NewHeader("Supported", "outbound"))
	return res
}

// onCancel answers a CANCEL that matched no transaction (sipgo answers the
// ones that match).
func (s *Server) onCancel(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	return newResponse(req, 481, "Call/Transaction Does Not Exist")
}
