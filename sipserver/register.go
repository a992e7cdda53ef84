package sipserver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/metrics"
	"gchd/registrar"
)

// onRegister is the registrar (RFC 3261 section 10.3): it authenticates the
// request, checks that the authenticated user owns the address-of-record,
// applies the bindings and answers with every current one.
func (s *Server) onRegister(ctx context.Context, req *sip.Request, tx sip.ServerTransaction) *sip.Response {
	res, result := s.processRegister(ctx, req)
	s.metrics.Registration(result)
	return res
}

func (s *Server) processRegister(ctx context.Context, req *sip.Request) (*sip.Response, metrics.RegistrationResult) {
	to := req.To()
	if to == nil || req.CallID() == nil || req.CSeq() == nil {
		return newResponse(req, 400, "Bad Request"), metrics.RegistrationInvalid
	}
	if !s.isOurDomain(req.Recipient.Host) || !s.isOurDomain(to.Address.Host) {
		return newResponse(req, 403, "Domain Not Served"), metrics.RegistrationForbidden
	}
	acc, challenge := s.authenticate(ctx, req)
	if challenge != nil {
		if challenge.StatusCode == 401 {
			return challenge, metrics.RegistrationChallenged
		}
		return challenge, metrics.RegistrationError
	}
	aor := to.Address.User
	if aor != acc.Login {
		s.metrics.SIPAuthFailure(metrics.AuthUserMismatch)
		s.log.Info("REGISTER for another user refused", "login", acc.Login, "aor", aor, "source", req.Source())
		return newResponse(req, 403, "Forbidden"), metrics.RegistrationForbidden
	}
	r, err := registerRequest(req, aor, s.trusted(req))
	if err != nil {
		return newResponse(req, 400, err.Error()), metrics.RegistrationInvalid
	}
	out, err := s.reg.Register(ctx, r)
	if err != nil {
		res := s.refuse(req, err, "register", "aor", aor)
		switch {
		case res.StatusCode >= 500:
			return res, metrics.RegistrationError
		case res.StatusCode == 403:
			return res, metrics.RegistrationForbidden
		}
		return res, metrics.RegistrationInvalid
	}
	res := newResponse(req, 200, "OK")
	now := time.Now()
	outbound := false
	for _, b := range out.Bindings {
		v := "<" + b.URI + ">;expires=" + strconv.Itoa(int(max(0, b.Expires.Sub(now).Round(time.Second)/time.Second)))
		if b.Instance != "" {
			v += `;+sip.instance="` + b.Instance + `"`
		}
		if b.RegID != 0 {
			v += ";reg-id=" + strconv.Itoa(b.RegID)
			outbound = true
		}
		if b.Push.Enabled() && !pushInURI(b.URI) {
			// Given as the Contact's parameters rather than its URI's:
			// listed back where the phone put them.
			v += ";pn-provider=" + b.Push.Provider + ";pn-prid=" + b.Push.PRID
			if b.Push.Param != "" {
				v += ";pn-param=" + b.Push.Param
			}
		}
		res.AppendHeader(sip.NewHeader("Contact", v))
	}
	if outbound && supports(req, "outbound") {
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
	}
	s.addPushCapabilities(res, r)
	res.AppendHeader(sip.NewHeader("Date", now.UTC().Format(time.RFC1123)))
	if out.Changed && s.onRegistered != nil {
		s.onRegistered(aor)
	}
	switch {
	case len(r.Contacts) == 0 && !r.Wildcard:
		return res, metrics.RegistrationQueried
	case len(out.Bindings) == 0 || r.Wildcard:
		return res, metrics.RegistrationUnregistered
	case out.Changed:
		return res, metrics.RegistrationRegistered
	}
	return res, metrics.RegistrationRefreshed
}

// registerRequest reduces a REGISTER to what the registrar needs.
// trusted is set when the source is in sip.trusted: its Contacts are used
// as written.
func registerRequest(req *sip.Request, aor string, trusted bool) (registrar.RegisterRequest, error) {
	r := registrar.RegisterRequest{
		AOR: aor, CallID: req.CallID().Value(), CSeq: req.CSeq().SeqNo, Expires: -1,
		Transport: strings.ToUpper(req.Transport()), Source: req.Source(),
	}
	if h := header(req, "User-Agent"); h != nil {
		r.UserAgent = truncate(h.Value(), 200)
	}
	if h := header(req, "Expires"); h != nil {
		n, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
		if err != nil {
			return r, errors.New("Invalid Expires")
		}
		r.Expires = int(min(n, 1<<31-1))
	}
	for h := range headersNamed(req, "Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			return r, errors.New("Invalid Contact")
		}
		if c.Address.Wildcard {
			r.Wildcard = true
			continue
		}
		if c.Address.Scheme != "sip" && c.Address.Scheme != "sips" {
			return r, errors.New("Unsupported URI Scheme")
		}
		cr := registrar.ContactRequest{URI: c.Address.String(), Expires: -1, NAT: behindNAT(req, c.Address, trusted)}
		if v, ok := c.Params.Get("expires"); ok {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return r, errors.New("Invalid Contact Expires")
			}
			cr.Expires = int(min(n, 1<<31-1))
		}
		if v, ok := c.Params.Get("+sip.instance"); ok {
			cr.Instance = truncate(strings.Trim(v, `"`), 200)
		}
		if v, ok := c.Params.Get("reg-id"); ok {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return r, errors.New("Invalid reg-id")
			}
			cr.RegID = n
		}
		if v, ok := c.Params.Get("q"); ok {
			cr.Q = truncate(v, 8)
		}
		push, err := pushParams(c)
		if err != nil {
			return r, err
		}
		cr.Push = push
		if limit := 512; len(cr.URI) > limit && (push.Provider == "" || len(cr.URI) > limit+maxPushParams) {
			return r, fmt.Errorf("Contact Too Long")
		}
		r.Contacts = append(r.Contacts, cr)
	}
	if r.Wildcard && len(r.Contacts) > 0 {
		return r, errors.New("Invalid Wildcard Contact")
	}
	return r, nil
}

// supports reports whether the request lists an option tag in Supported.
func supports(req *sip.Request, tag string) bool {
	for h := range headersNamed(req, "Supported") {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// behindNAT decides where a contact is reached: true sends everything to
// the registration's flow (its source address and port, over its
// transport), false to the Contact as written. Over a connection it is
// always the connection. Over UDP the Contact is used as written only when
// the source is in sip.trusted (an SBC registering for phones behind it),
// or when it is an IP literal equal to the source's address and the Via
// names the source truthfully: a phone, or SIPp, that receives on another
// port than it sends from. Anything else, another address, a host name
// (which DNS could point anywhere), a private address behind a NAT, is
// reached through the flow, as Kamailio's nat_uac_test would have it: a
// REGISTER must not aim gchd's requests at a host that did not send it.
func behindNAT(req *sip.Request, contact sip.Uri, trusted bool) bool {
	if strings.ToUpper(req.Transport()) != "UDP" {
		return true
	}
	host := strings.ToLower(contact.Host)
	if strings.HasSuffix(host, ".invalid") {
		return true // RFC 7118: a name that reaches nothing
	}
	if trusted {
		return false
	}
	src, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return true
	}
	via := req.Via()
	if via == nil {
		return true
	}
	viaPort := via.Port
	if viaPort == 0 {
		viaPort = 5060
	}
	viaIP, err := netip.ParseAddr(via.Host)
	if err != nil || viaIP.Unmap() != src.Addr().Unmap() || uint16(viaPort) != src.Port() {
		return true
	}
	ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return true // a name
	}
	return ip.Unmap() != src.Addr().Unmap()
}
