package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Cached returns a check that runs check at most once per interval and
// answers its last outcome in between, so that a check that writes (the
// database's write probe) costs one write per interval however many load
// balancers poll /readyz. The check runs under its own timeout, not the
// caller's: its outcome is shared by every caller until the next run.
func Cached(interval, timeout time.Duration, check Check) Check {
	var (
		mu  sync.Mutex
		at  time.Time
		err error
	)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < interval {
			return err
		}
		runCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		err, at = check(runCtx), time.Now()
		return err
	}
}

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
