package sipserver

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/limits"
	"gchd/metrics"
	"gchd/registrar"
)

// digestAuth issues and checks digest challenges (RFC 3261 22, RFC 8760)
// without keeping a session per client: a nonce carries its issue time and
// a slot number, signed with a server secret, so any node that shares the
// secret accepts it, and an expired one is recognised (stale=true). Each
// slot of a fixed ring remembers the highest nonce-count seen, so a replayed
// Authorization is refused; memory stays bounded however many challenges
// are issued, at the price that a nonce whose slot was reused goes stale.
type digestAuth struct {
	realm      string
	realmBytes []byte
	secret     []byte
	lifetime   time.Duration
	algorithms []string
	now        func() time.Time

	next  atomic.Uint64
	slots []ncSlot
	macs  sync.Pool // of HMAC-SHA256 states keyed with secret
}

type ncSlot struct {
	mu    sync.Mutex
	nonce uint64 // the issue stamp of the nonce that owns the slot
	nc    uint32 // highest nonce-count used
	used  bool   // used without qop (no nonce-count): only once
}

const ncSlots = 1 << 18

func newDigestAuth(realm string, secret []byte, lifetime time.Duration, algorithms []string) (*digestAuth, error) {
	if len(secret) == 0 {
		secret = make([]byte, 32)
		if _, err := rand.Read(secret); err != nil {
			return nil, err
		}
	}
	for _, a := range algorithms {
		if a != registrar.MD5 && a != registrar.SHA256 {
			return nil, fmt.Errorf("digest algorithm %q: want MD5 or SHA-256", a)
		}
	}
	return &digestAuth{realm: realm, realmBytes: []byte(realm), secret: secret, lifetime: lifetime, algorithms: algorithms, now: time.Now,
		slots: make([]ncSlot, ncSlots)}, nil
}

// nonce layout, before base64: issue time in µs (8) | slot (4) | MAC (16).
const nonceLen = 8 + 4 + 16

// newNonce issues a nonce and claims a slot for its nonce-counts.
func (a *digestAuth) newNonce() string {
	stamp := uint64(a.now().UnixMicro())
	slot := uint32(a.next.Add(1) % ncSlots)
	var b [nonceLen]byte
	binary.BigEndian.PutUint64(b[0:8], stamp)
	binary.BigEndian.PutUint32(b[8:12], slot)
	mac := a.mac(b[:12])
	copy(b[12:], mac[:])
	s := &a.slots[slot]
	s.mu.Lock()
	s.nonce, s.nc, s.used = stamp, 0, false
	s.mu.Unlock()
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// mac signs a nonce's stamp and slot (with the realm). Every challenge and
// every authenticated request computes one: the HMAC states are pooled, as
// a new one allocates its keyed inner and outer hashes.
func (a *digestAuth) mac(b []byte) [16]byte {
	m, _ := a.macs.Get().(hash.Hash)
	if m == nil {
		m = hmac.New(sha256.New, a.secret)
	}
	m.Reset()
	m.Write(b)
	m.Write(a.realmBytes)
	var sum [sha256.Size]byte
	m.Sum(sum[:0])
	a.macs.Put(m)
	return [16]byte(sum[:16])
}

// challenges returns the values of WWW-Authenticate (or Proxy-Authenticate)
// headers, one per algorithm, sharing one nonce. Phones differ in which
// challenge they read: most take the first, JsSIP (the browsers' stack,
// on WebSocket) takes the last. So over WebSocket MD5, which every client
// can answer, goes last; elsewhere the configured order stands.
func (a *digestAuth) challenges(stale bool, transport string) []string {
	nonce := a.newNonce()
	algs := a.algorithms
	if t := strings.ToUpper(transport); (t == "WS" || t == "WSS") && len(algs) > 1 && contains(algs, registrar.MD5) {
		algs = make([]string, 0, len(a.algorithms))
		for _, alg := range a.algorithms {
			if alg != registrar.MD5 {
				algs = append(algs, alg)
			}
		}
		algs = append(algs, registrar.MD5)
	}
	out := make([]string, 0, len(algs))
	for _, alg := range algs {
		c := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"`, a.realm, nonce, alg)
		if stale {
			c += ", stale=true"
		}
		out = append(out, c)
	}
	return out
}

// authFailure explains why a request was not authenticated; the reason is
// a metrics label and a log field, never shown to the client.
type authFailure struct {
	reason metrics.AuthFailure
	stale  bool
	user   string // the username the client gave, if any
}

func (f *authFailure) Error() string { return "digest authentication failed: " + string(f.reason) }

// verify checks the Authorization (or Proxy-Authorization) header of req
// and returns the authenticated account.
func (a *digestAuth) verify(ctx context.Context, req *sip.Request, name string, accounts Accounts) (registrar.Account, error) {
	cred, err := a.credentials(req, name)
	if err != nil {
		return registrar.Account{}, err
	}
	return a.check(ctx, req, &cred, accounts)
}

// credentials parses the Authorization (or Proxy-Authorization) header of
// req: the login it names is known before anything is checked.
func (a *digestAuth) credentials(req *sip.Request, name string) (credentials, error) {
	h := header(req, name)
	if h == nil {
		return credentials{}, &authFailure{reason: metrics.AuthMissing}
	}
	cred, err := parseCredentials(h.Value())
	if err != nil || cred.Username == "" || cred.Response == "" {
		return credentials{}, &authFailure{reason: metrics.AuthMalformed}
	}
	return cred, nil
}

// check verifies parsed credentials of req and returns the account.
func (a *digestAuth) check(ctx context.Context, req *sip.Request, cred *credentials, accounts Accounts) (registrar.Account, error) {
	if cred.Realm != a.realm {
		return registrar.Account{}, &authFailure{reason: metrics.AuthRealm}
	}
	alg := strings.ToUpper(cred.Algorithm)
	if alg == "" {
		alg = registrar.MD5
	}
	if !contains(a.algorithms, alg) {
		return registrar.Account{}, &authFailure{reason: metrics.AuthAlgorithm}
	}
	stamp, slot, ok := a.parseNonce(cred.Nonce)
	if !ok {
		return registrar.Account{}, &authFailure{reason: metrics.AuthNonce}
	}
	if cred.QOP != "" && cred.QOP != "auth" {
		return registrar.Account{}, &authFailure{reason: metrics.AuthQOP}
	}
	acc, err := accounts.Lookup(ctx, cred.Username)
	ha1 := acc.HA1(alg)
	switch {
	case errors.Is(err, registrar.ErrNoAccount) || (err == nil && acc.Realm != a.realm):
		// Compute anyway: an unknown user takes as long as a wrong password.
		ha1 = strings.Repeat("0", 64)
		expected(alg, ha1, string(req.Method), cred)
		return registrar.Account{}, &authFailure{reason: metrics.AuthCredentials, user: cred.Username}
	case err != nil:
		return registrar.Account{}, fmt.Errorf("look up %s: %w", cred.Username, err)
	}
	// The response is computed over the uri as the client sent it (SIPp,
	// for one, puts the server's address there rather than the
	// Request-URI), as Kamailio does.
	want := expected(alg, ha1, string(req.Method), cred)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(cred.Response))) != 1 {
		return registrar.Account{}, &authFailure{reason: metrics.AuthCredentials, user: cred.Username}
	}
	if a.now().Sub(time.UnixMicro(int64(stamp))) > a.lifetime {
		return registrar.Account{}, &authFailure{reason: metrics.AuthStale, stale: true}
	}
	if !a.count(stamp, slot, cred) {
		return registrar.Account{}, &authFailure{reason: metrics.AuthReplay, stale: true}
	}
	return acc, nil
}

// parseNonce checks a nonce's signature and returns its stamp and slot.
func (a *digestAuth) parseNonce(nonce string) (stamp uint64, slot uint32, ok bool) {
	b, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(b) != nonceLen {
		return 0, 0, false
	}
	if mac := a.mac(b[:12]); !hmac.Equal(b[12:], mac[:]) {
		return 0, 0, false
	}
	slot = binary.BigEndian.Uint32(b[8:12])
	if slot >= ncSlots {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(b[0:8]), slot, true
}

// count enforces nonce-counts: each use must count higher than the last;
// a nonce used without qop serves once.
func (a *digestAuth) count(stamp uint64, slot uint32, cred *credentials) bool {
	s := &a.slots[slot]
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonce != stamp {
		return false // the slot went to a newer nonce (or another node issued it)
	}
	if cred.QOP == "" {
		if s.used {
			return false
		}
		s.used = true
		return true
	}
	if cred.Nc <= 0 || uint32(cred.Nc) <= s.nc {
		return false
	}
	s.nc = uint32(cred.Nc)
	return true
}

// expected computes the digest response of RFC 2617/7616 with qop=auth or
// without qop, as lowercase hex. It runs for every authenticated request,
// so the hashes are computed on the stack: md5.New and hex.EncodeToString
// allocated five times a request.
func expected(alg, ha1, method string, cred *credentials) string {
	var scratch [256]byte
	var ha2 [2 * sha256.Size]byte
	h2 := digestHex(ha2[:0], alg, joinColon(scratch[:0], method, cred.URI))
	in := joinColon(scratch[:0], ha1, cred.Nonce)
	if cred.QOP != "" {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(cred.Nc))
		var nc [8]byte // the nonce-count as 8 lowercase hex digits
		hex.Encode(nc[:], n[:])
		in = joinColon(append(in, ':'), string(nc[:]), cred.Cnonce, cred.QOP)
	}
	var resp [2 * sha256.Size]byte
	return string(digestHex(resp[:0], alg, append(append(in, ':'), h2...)))
}

// joinColon appends parts to buf, separated by colons.
func joinColon(buf []byte, parts ...string) []byte {
	for i, p := range parts {
		if i > 0 {
			buf = append(buf, ':')
		}
		buf = append(buf, p...)
	}
	return buf
}

// digestHex appends to dst the hex digest of in by alg.
func digestHex(dst []byte, alg string, in []byte) []byte {
	if alg == registrar.SHA256 {
		sum := sha256.Sum256(in)
		return hex.AppendEncode(dst, sum[:])
	}
	sum := md5.Sum(in)
	return hex.AppendEncode(dst, sum[:])
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// challenge answers req with 401 (REGISTER) or 407 (anything else) and
// fresh challenges.
func (s *Server) challenge(req *sip.Request, stale bool) *sip.Response {
	code, reason, field := 407, "Proxy Authentication Required", "Proxy-Authenticate"
	if req.Method == sip.REGISTER {
		code, reason, field = 401, "Unauthorized", "WWW-Authenticate"
	}
	res := newResponse(req, code, reason)
	for _, c := range s.auth.challenges(stale, req.Transport()) {
		res.AppendHeader(sip.NewHeader(field, c))
	}
	return res
}

// authenticate returns the account that signed req, or the response to
// send instead: a challenge when credentials are missing, wrong or stale,
// 403 when the source is banned or the login locked for it (limits.Logins):
// that answer is given before any password is checked, so it is the same
// whatever the password.
func (s *Server) authenticate(ctx context.Context, req *sip.Request) (registrar.Account, *sip.Response) {
	field := "Proxy-Authorization"
	if req.Method == sip.REGISTER {
		field = "Authorization"
	}
	source := sourceIP(req)
	logins := limits.Logins{Source: s.opts.Guards.AuthSource, Account: s.opts.Guards.AuthAccount}
	if refused := logins.Admit(source, ""); refused != "" {
		s.metrics.LimitRejected(refused)
		return registrar.Account{}, newResponse(req, 403, "Forbidden: Too Many Failed Logins")
	}
	cred, err := s.auth.credentials(req, field)
	var acc registrar.Account
	if err == nil {
		if refused := logins.Admit(source, cred.Username); refused != "" {
			s.metrics.LimitRejected(refused)
			return registrar.Account{}, newResponse(req, 403, "Forbidden: Too Many Failed Logins")
		}
		acc, err = s.auth.check(ctx, req, &cred, s.accounts)
	}
	if err == nil {
		logins.Succeeded(source, acc.Login)
		return acc, nil
	}
	var f *authFailure
	if !errors.As(err, &f) {
		return registrar.Account{}, s.refuse(req, err, "digest authentication")
	}
	if f.reason != metrics.AuthMissing {
		s.metrics.SIPAuthFailure(f.reason)
		s.log.Info("sip authentication failed", "reason", f.reason, "method", req.Method, "call_id", callID(req),
			"source", req.Source(), "from", fromUser(req))
	}
	if f.reason == metrics.AuthCredentials {
		// Wrong passwords (not stale nonces) count towards a ban.
		banned, locked := logins.Failed(source, f.user)
		if banned {
			s.log.Warn("source banned after failed logins", "source", source)
		}
		if locked {
			s.log.Warn("login locked for failing sources after failed logins", "login", f.user)
		}
	}
	return registrar.Account{}, s.challenge(req, f.stale)
}

// sourceIP is the address a request came from, without the port.
func sourceIP(req *sip.Request) string {
	host, _, err := net.SplitHostPort(req.Source())
	if err != nil {
		return req.Source()
	}
	return host
}

func callID(req *sip.Request) string {
	if c := req.CallID(); c != nil {
		return c.Value()
	}
	return ""
}

func fromUser(req *sip.Request) string {
	if f := req.From(); f != nil {
		return f.Address.User
	}
	return ""
}
