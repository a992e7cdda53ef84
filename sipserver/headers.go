package sipserver

import (
	"iter"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Header lookups that allocate nothing. sipgo's GetHeader and GetHeaders
// lower-case the name of every header they pass in order to compare it:
// one allocation per header whose name is not among the few they know
// (Authorization, Expires, User-Agent...), on every lookup, and a
// REGISTER looks up several such headers.

// header returns the first header of m named name, in any case.
func header(m interface{ Headers() []sip.Header }, name string) sip.Header {
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			return h
		}
	}
	return nil
}

// headersNamed yields the headers of m named name, in any case, in order.
func headersNamed(m interface{ Headers() []sip.Header }, name string) iter.Seq[sip.Header] {
	return func(yield func(sip.Header) bool) {
		for _, h := range m.Headers() {
			if strings.EqualFold(h.Name(), name) && !yield(h) {
				return
			}
		}
	}
}

// identityHeaders name who a request is from in ways a receiving phone
// may show or trust (RFC 3325, draft-ietf-sip-privacy Remote-Party-ID).
// From an untrusted source they are made up by the sender; gchd puts its
// own P-Asserted-Identity in their place.
var identityHeaders = [...]string{"P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID"}

// sanitize prepares a request gchd relays: credentials for our realm
// (Authorization, Proxy-Authorization) are removed from every request, so
// that no callee receives a caller's digest to crack offline (RFC 3261
// 22.3: a proxy consumes its own); credentials for other realms pass. From
// a source outside sip.trusted, the identity headers and gchd's own X-GC-*
// headers (which mark group traffic) are removed, and when identity is not
// empty (the login the request authenticated as) a P-Asserted-Identity
// naming it is added.
func (s *Server) sanitize(req *sip.Request, identity string) {
	trusted := s.trusted(req)
	var drop, keep []sip.Header
	for _, h := range req.Headers() {
		name := h.Name()
		switch {
		case strings.EqualFold(name, "Authorization") || strings.EqualFold(name, "Proxy-Authorization"):
			if realm, ok := credentialRealm(h.Value()); ok && !strings.EqualFold(realm, s.opts.Domain) {
				keep = append(keep, h)
			}
			drop = append(drop, h)
		case !trusted && isIdentityHeader(name):
			drop = append(drop, h)
		}
	}
	for _, h := range drop {
		req.RemoveHeader(h.Name())
	}
	for _, h := range keep {
		req.AppendHeader(h)
	}
	if !trusted && identity != "" {
		req.AppendHeader(sip.NewHeader("P-Asserted-Identity", "<sip:"+identity+"@"+s.opts.Domain+">"))
	}
}

func isIdentityHeader(name string) bool {
	if len(name) >= len("X-GC-") && strings.EqualFold(name[:len("X-GC-")], "X-GC-") {
		return true
	}
	for _, n := range identityHeaders {
		if strings.EqualFold(name, n) {
			return true
		}
	}
	return false
}

// credentialRealm returns the realm parameter of a digest credentials
// value (RFC 3261 25.1: auth-params separated by commas, values quoted or
// tokens). ok is false when there is none or the value cannot be read:
// such a credential is treated as ours.
func credentialRealm(v string) (realm string, ok bool) {
	_, params, found := strings.Cut(strings.TrimSpace(v), " ")
	if !found {
		return "", false
	}
	for params != "" {
		params = strings.TrimLeft(params, " \t,")
		k, rest, found := strings.Cut(params, "=")
		if !found {
			return "", false
		}
		rest = strings.TrimLeft(rest, " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(rest) {
				return "", false
			}
			val, params = rest[1:end], rest[end+1:]
		} else {
			val, params, _ = strings.Cut(rest, ",")
			val = strings.TrimSpace(val)
		}
		if strings.EqualFold(strings.TrimSpace(k), "realm") {
			return val, true
		}
	}
	return "", false
}
