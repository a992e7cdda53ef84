package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"
)

// serveHealth answers that the process is alive. It touches nothing else,
// so that a slow database does not get a healthy process restarted.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"status":"ok"}` + "\n"))
}

// serveReady runs every readiness check and answers 200 when all pass, 503
// otherwise, with each check's outcome in the JSON body.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	names := make([]string, 0, len(s.opts.Ready))
	for name := range s.opts.Ready {
		names = append(names, name)
	}
	sort.Strings(names)
	checks := make(map[string]string, len(names))
	status, code := "ok", http.StatusOK
	for _, name := range names {
		if err := s.opts.Ready[name](ctx); err != nil {
			checks[name] = err.Error()
			status, code = "unavailable", http.StatusServiceUnavailable
		} else {
			checks[name] = "ok"
		}
	}
	body, _ := json.Marshal(map[string]any{"status": status, "checks": checks})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}
