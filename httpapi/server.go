// Package httpapi serves the group chat API at /gch.ashx (and the reference
// deployment's /emcd/gch.ashx), the group video downloads, health checks and
// the metrics endpoint. It decodes requests, authenticates the caller with
// HTTP basic auth against the SIP account, and maps chat's errors to the
// API's result codes. The rules themselves live in chat.
package httpapi

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"gchd/chat"
	"gchd/limits"
	"gchd/metrics"
	"gchd/registrar"
)

// Authenticator checks HTTP basic credentials against the SIP accounts.
type Authenticator interface {
	Authenticate(ctx context.Context, login, password string) (registrar.Account, error)
}

// Check is one readiness check; nil means ready.
type Check func(ctx context.Context) error

// Options configure the API.
type Options struct {
	// Realm is named in the WWW-Authenticate challenge (the SIP domain).
	Realm string
	// CodesInStatus answers result codes as the HTTP status as well as the
	// body; false answers HTTP 200 with the code in the body.
	CodesInStatus bool
	// MaxBodyBytes bounds a request body, and the fields of an upload
	// besides its file.
	MaxBodyBytes int64
	// Metrics is served at /metrics when set.
	Metrics http.Handler
	// Ready lists the checks of /readyz by name.
	Ready map[string]Check
	// Guards are the abuse limits; nil fields are off.
	Guards Guards
	// TrustedProxies are reverse proxies whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
	// Events bound the live event streams.
	Events EventOptions
}

// Guards are the limits that protect the API from abuse, per source
// address (and account for logins).
type Guards struct {
	Rate        *limits.Rate     // requests per source
	AuthSource  *limits.Failures // failed logins per source
	AuthAccount *limits.Failures // failed logins per account
}

// Server is the HTTP face of gchd.
type Server struct {
	chat    *chat.Service
	auth    Authenticator
	metrics *metrics.Metrics
	opts    Options
	log     *slog.Logger
	methods map[string]method
	streams streamCounts
}

// New returns the API server.
func New(svc *chat.Service, auth Authenticator, m *metrics.Metrics, log *slog.Logger, opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 160 << 10
	}
	if opts.Events.Keepalive <= 0 {
		opts.Events.Keepalive = 15 * time.Second
	}
	if opts.Events.WriteTimeout <= 0 {
		opts.Events.WriteTimeout = 10 * time.Second
	}
	return &Server{chat: svc, auth: auth, metrics: m, opts: opts, log: log, methods: methodTable()}
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/gch.ashx", s.limited(s.serveGCH))
	mux.Handle("/emcd/gch.ashx", s.limited(s.serveGCH))
	mux.Handle("/gch/events", s.limited(s.serveEvents))
	mux.Handle("GET /groupchat/{id}/video", s.limited(s.serveGroupFile(chat.MediaVideo)))
	mux.Handle("GET /groupchat/{id}/video-thumb", s.limited(s.serveGroupFile(chat.MediaVideoThumb)))
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /readyz", s.serveReady)
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", s.opts.Metrics)
	}
	return mux
}

// limited refuses requests from a source over its rate with 429.
func (s *Server) limited(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.opts.Guards.Rate != nil && !s.opts.Guards.Rate.Allow(s.clientIP(r)) {
			s.metrics.LimitRejected("http_rate")
			tooMany(w)
			return
		}
		h(w, r)
	})
}

// tooMany answers 429 with a hint to wait.
func tooMany(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusTooManyRequests)
	w.Write([]byte("429"))
}

// clientIP is the address limits and bans apply to: the peer, or, when
// the peer is a trusted reverse proxy, the last address of X-Forwarded-For
// that is not one (as nginx's real_ip_recursive). Addresses left of it
// were written by the client and prove nothing.
func (s *Server) clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(s.opts.TrustedProxies) == 0 {
		return host
	}
	if peer, err := netip.ParseAddr(host); err != nil || !s.trustedProxy(peer) {
		return host
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		hop := strings.TrimSpace(hops[i])
		a, err := netip.ParseAddr(hop)
		if err != nil {
			break // a malformed hop: trust nothing beyond the proxy
		}
		if !s.trustedProxy(a) {
			return a.Unmap().String()
		}
		host = hop
	}
	return host
}

func (s *Server) trustedProxy(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range s.opts.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// requestID returns the caller's X-Request-Id or a new random one, so that
// a log line can be found from what the client saw.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" && len(id) <= 64 {
		return id
	}
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// timestamp formats a time as the API does: UTC, to the second, "" for none.
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05")
}
