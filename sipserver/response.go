package sipserver

import (
	"math/rand/v2"
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// newResponse builds a response to req (sending it is respond's, handlers.go).
//
// Answers to REGISTER are built here rather than by sipgo: they are most of
// what a registrar sends (every registration is challenged first, and
// every phone refreshes), and sipgo's NewResponseFromRequest clones each
// header it copies, looks each up by name, and draws a UUID from the
// system's random source for the To tag, work that shows in the CPU of
// every registration. A REGISTER is answered once, finally, and
// dropped (its answer is kept encoded, see internal/ingress/answers.go), so its answer can
// share the request's From, Call-ID, CSeq and Via headers, none of which
// is changed afterwards; only the top Via (rport) and To (tag) are new.
// Every other method keeps sipgo's copy: a proxied request lives on, and
// INVITE answers carry Record-Route.
func newResponse(req *sip.Request, code int, reason string) *sip.Response {
	if req.Method != sip.REGISTER {
		return sip.NewResponseFromRequest(req, code, reason, nil)
	}
	res := sip.NewResponse(code, reason)
	res.SipVersion = req.SipVersion
	top := true
	for h := range headersNamed(req, "Via") {
		if via, ok := h.(*sip.ViaHeader); ok && top {
			h = responseVia(via, req.Source())
		}
		top = false
		res.AppendHeader(h)
	}
	if h := req.From(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.To(); h != nil {
		to := &sip.ToHeader{DisplayName: h.DisplayName, Address: h.Address, Params: h.Params}
		if !h.Params.Has("tag") {
			// RFC 3261 19.3: random, at least 32 bits. math/rand/v2's
			// generator is ChaCha8, seeded from the system per thread.
			to.Params = append(make(sip.HeaderParams, 0, len(h.Params)+1), h.Params...)
			to.Params.Add("tag", strconv.FormatUint(rand.Uint64(), 36))
		}
		res.AppendHeader(to)
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(h)
	}
	res.SetBody(nil)
	res.SetTransport(req.Transport())
	res.SetDestination(req.Source())
	return res
}

// responseVia returns the top Via of a response: the request's, with rport
// filled in and received added when the phone asked for them (RFC 3581 4).
func responseVia(via *sip.ViaHeader, source string) sip.Header {
	if v, ok := via.Params.Get("rport"); !ok || v != "" {
		return via
	}
	host, port, err := net.SplitHostPort(source)
	if err != nil {
		return via
	}
	c := via.Clone()
	c.Params.Add("rport", port)
	c.Params.Add("received", host)
	return c
}
