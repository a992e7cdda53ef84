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
	"net/http"
	"time"

	"gchd/chat"
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
	// MaxBodyBytes bounds a request body other than an upload.
	MaxBodyBytes int64
	// Metrics is served at /metrics when set.
	Metrics http.Handler
	// Ready lists the checks of /readyz by name.
	Ready map[string]Check
}

// Server is the HTTP face of gchd.
type Server struct {
	chat    *chat.Service
	auth    Authenticator
	metrics *metrics.Metrics
	opts    Options
	log     *slog.Logger
	methods map[string]method
}

// New returns the API server.
func New(svc *chat.Service, auth Authenticator, m *metrics.Metrics, log *slog.Logger, opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	return &Server{chat: svc, auth: auth, metrics: m, opts: opts, log: log, methods: methodTable()}
}

// Handler returns the routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/gch.ashx", s.serveGCH)
	mux.HandleFunc("/emcd/gch.ashx", s.serveGCH)
	mux.HandleFunc("GET /groupchat/{id}/video", s.serveGroupFile(chat.MediaVideo))
	mux.HandleFunc("GET /groupchat/{id}/video-thumb", s.serveGroupFile(chat.MediaVideoThumb))
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /readyz", s.serveReady)
	if s.opts.Metrics != nil {
		mux.Handle("GET /metrics", s.opts.Metrics)
	}
	return mux
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
