package sipserver

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Request validation (RFC 3261 8.2 and 16.3): the checks sipgo's parser
// leaves to the application. sipgo already drops what it cannot parse
// (over UDP silently, over TCP by closing the connection) and answers a
// request without Via or CSeq with a stateless 400; what reaches a handler
// is syntactically parsed but may still be semantically broken:
//
//   - a SIP version other than 2.0: 505 (RFC 3261 8.2.2 via 7.1, RFC 4475
//     badvers). The response says SIP/2.0, not the version it rejects;
//   - a missing or repeated From, To, Call-ID or CSeq, a repeated
//     Max-Forwards or Content-Length (RFC 3261 7.3.1, 8.1.1; RFC 4475
//     insuf, multi01, mcl01): 400. sipgo keeps them all, but its accessors
//     (req.From(), req.CSeq(), ...) return the last one while a proxy
//     forwards every one, so no handler could tell which is meant;
//   - a CSeq method other than the request's (RFC 3261 8.1.1.5; RFC 4475
//     mismatch01, mismatch02): 400;
//   - Max-Forwards above 255 (RFC 3261 20.22): 400;
//   - a CR or LF inside a header value or the Request-URI: 400. sipgo
//     splits lines on CR LF only, so a bare LF (or CR) stays inside the
//     value it is in and a proxy would write it to the next hop byte for
//     byte, where a parser that ends lines on LF sees a header the sender
//     made up (a forged identity, a second Content-Length);
//   - headers (?name=value) in the Request-URI, which RFC 3261 19.1.1 does
//     not allow there (RFC 4475 escruri): 400, rather than risk turning
//     them into real header fields;
//   - a REGISTER whose To is not a SIP or SIPS URI, so not an
//     address-of-record (RFC 3261 10.2, RFC 4475 unksm2): 400;
//   - a Request-URI scheme other than sip or sips (RFC 3261 8.2.2.1 and
//     16.3 step 2; RFC 4475 unkscm): 416. gchd routes nothing else;
//   - Max-Forwards 0 on a request for a user, whatever the domain (RFC 3261
//     16.3 step 3, RFC 4475 zeromf): 483. A request to the server itself
//     (no user part: an OPTIONS ping, which the RFC lets a proxy answer
//     with Max-Forwards 0) and a REGISTER end at gchd and pass; CANCEL
//     follows its INVITE;
//   - an option tag in Proxy-Require that gchd does not implement (RFC 3261
//     16.3 step 5) or, where gchd is the UAS (REGISTER, an OPTIONS that
//     onOptions answers itself), in Require (8.2.2.3): 420 with an
//     Unsupported header listing them (RFC 4475 bext01). Require on a
//     request gchd proxies is for the far end to judge, and CANCEL is never
//     rejected for it.
//
// The checks run on every request but ACK (onAck is not wrapped by handle:
// an ACK is never answered), in the order of RFC 3261 16.3, and allocate
// nothing unless they reject.
func (s *Server) validate(req *sip.Request) *sip.Response {
	if !strings.EqualFold(req.SipVersion, "SIP/2.0") {
		res := newResponse(req, 505, "Version Not Supported")
		res.SipVersion = "SIP/2.0"
		return res
	}

	var from, to, callID, cseq, maxFwd, contentLength int
	var mf *sip.MaxForwardsHeader
	var cs *sip.CSeqHeader
	for _, h := range req.Headers() {
		switch h := h.(type) {
		case *sip.FromHeader:
			from++
		case *sip.ToHeader:
			to++
		case *sip.CallIDHeader:
			callID++
		case *sip.CSeqHeader:
			cseq++
			cs = h
		case *sip.MaxForwardsHeader:
			maxFwd++
			mf = h
		case *sip.ContentLengthHeader:
			contentLength++
		}
	}
	switch {
	case from != 1:
		return badRequest(req, from, "From")
	case to != 1:
		return badRequest(req, to, "To")
	case callID != 1:
		return badRequest(req, callID, "Call-ID")
	case cseq != 1:
		return badRequest(req, cseq, "CSeq")
	case maxFwd > 1:
		return badRequest(req, maxFwd, "Max-Forwards")
	case contentLength > 1:
		return badRequest(req, contentLength, "Content-Length")
	}
	// sipgo upper-cases the method of the request line (RFC 3261 says
	// methods are case-sensitive), so the comparison cannot be exact.
	if !strings.EqualFold(strings.TrimSpace(string(cs.MethodName)), string(req.Method)) {
		return newResponse(req, 400, "CSeq Method Does Not Match")
	}
	if mf != nil && *mf > 255 {
		return newResponse(req, 400, "Invalid Max-Forwards")
	}
	if uriHasCRLF(&req.Recipient) {
		return newResponse(req, 400, "Bare CR or LF in Request-URI")
	}
	for _, h := range req.Headers() {
		if headerHasCRLF(h) {
			return newResponse(req, 400, "Bare CR or LF in "+h.Name())
		}
	}
	if len(req.Recipient.Headers) > 0 {
		return newResponse(req, 400, "Headers Not Allowed in Request-URI")
	}
	if req.Method == sip.REGISTER && !isSIPScheme(req.To().Address.Scheme) {
		return newResponse(req, 400, "To Is Not a SIP Address-of-Record")
	}

	if !isSIPScheme(req.Recipient.Scheme) {
		return newResponse(req, 416, "Unsupported URI Scheme")
	}

	if mf != nil && *mf == 0 && req.Recipient.User != "" && req.Method != sip.REGISTER && req.Method != sip.CANCEL {
		return newResponse(req, 483, "Too Many Hops")
	}

	uas := s.isUAS(req)

	if req.Method != sip.CANCEL {
		if res := s.checkExtensions(req, uas); res != nil {
			return res
		}
	}
	return nil
}

// isUAS reports whether gchd itself answers req rather than routing it on:
// a REGISTER, or an OPTIONS that onOptions answers (one not addressed to a
// user of ours; keep in step with onOptions in handlers.go).
func (s *Server) isUAS(req *sip.Request) bool {
	switch req.Method {
	case sip.REGISTER:
		return true
	case sip.OPTIONS:
		return req.Recipient.User == "" || !s.isOurDomain(req.Recipient.Host)
	}
	return false
}

// supportedExtensions are the option tags gchd accepts in Proxy-Require
// and Require, the ones its OPTIONS answer lists in Supported:
//
//   - outbound (RFC 5626): reg-id and +sip.instance bindings, flows kept,
//     Require: outbound in the REGISTER answer.
//
// Every other tag (path, 100rel, timer, gruu, replaces, ...) is unknown to
// gchd acting as registrar or UAS; as a proxy it forwards Require untouched.
// Path (RFC 3327) is not implemented: gchd is the edge itself.
var supportedExtensions = [...]string{"outbound"}

// checkExtensions answers 420 Bad Extension when Proxy-Require, or Require
// when gchd is the UAS, names an option tag gchd does not support.
func (s *Server) checkExtensions(req *sip.Request, uas bool) *sip.Response {
	var unsupported []string // allocated only when a tag is refused
	for _, h := range req.Headers() {
		name := h.Name()
		if !strings.EqualFold(name, "Proxy-Require") && !(uas && strings.EqualFold(name, "Require")) {
			continue
		}
		for v := h.Value(); v != ""; {
			var tag string
			tag, v, _ = strings.Cut(v, ",")
			tag = strings.TrimSpace(tag)
			if tag != "" && !extensionSupported(tag) && !containsFold(unsupported, tag) {
				unsupported = append(unsupported, tag)
			}
		}
	}
	if len(unsupported) == 0 {
		return nil
	}
	res := newResponse(req, 420, "Bad Extension")
	res.AppendHeader(sip.NewHeader("Unsupported", strings.Join(unsupported, ", ")))
	return res
}

func extensionSupported(tag string) bool {
	for _, t := range supportedExtensions {
		if strings.EqualFold(t, tag) {
			return true
		}
	}
	return false
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func isSIPScheme(scheme string) bool {
	return strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips")
}

// badRequest answers a request that lacks a mandatory header or repeats a
// single-valued one.
func badRequest(req *sip.Request, n int, header string) *sip.Response {
	if n == 0 {
		return newResponse(req, 400, "Missing "+header)
	}
	return newResponse(req, 400, "Multiple "+header+" Values")
}

// headerHasCRLF reports whether a header's value holds a CR or LF. Typed
// headers are checked field by field, for Value() would build a string.
func headerHasCRLF(h sip.Header) bool {
	switch h := h.(type) {
	case *sip.FromHeader:
		return hasCRLF(h.DisplayName) || uriHasCRLF(&h.Address) || paramsHaveCRLF(h.Params)
	case *sip.ToHeader:
		return hasCRLF(h.DisplayName) || uriHasCRLF(&h.Address) || paramsHaveCRLF(h.Params)
	case *sip.ContactHeader:
		return hasCRLF(h.DisplayName) || uriHasCRLF(&h.Address) || paramsHaveCRLF(h.Params)
	case *sip.RouteHeader:
		return uriHasCRLF(&h.Address)
	case *sip.RecordRouteHeader:
		return uriHasCRLF(&h.Address)
	case *sip.ViaHeader:
		return hasCRLF(h.ProtocolName) || hasCRLF(h.ProtocolVersion) || hasCRLF(h.Transport) || hasCRLF(h.Host) ||
			paramsHaveCRLF(h.Params)
	case *sip.CallIDHeader:
		return hasCRLF(string(*h))
	case *sip.ContentTypeHeader:
		return hasCRLF(string(*h))
	case *sip.CSeqHeader:
		return hasCRLF(string(h.MethodName))
	case *sip.MaxForwardsHeader, *sip.ExpiresHeader, *sip.ContentLengthHeader:
		return false
	}
	return hasCRLF(h.Name()) || hasCRLF(h.Value()) // generic headers hold their value as read
}

func uriHasCRLF(u *sip.Uri) bool {
	return hasCRLF(u.Scheme) || hasCRLF(u.User) || hasCRLF(u.Password) || hasCRLF(u.Host) || hasCRLF(u.Raw()) ||
		paramsHaveCRLF(u.UriParams) || paramsHaveCRLF(u.Headers)
}

func paramsHaveCRLF(p sip.HeaderParams) bool {
	for _, kv := range p {
		if hasCRLF(kv.K) || hasCRLF(kv.V) {
			return true
		}
	}
	return false
}

func hasCRLF(s string) bool { return strings.ContainsAny(s, "\r\n") }
