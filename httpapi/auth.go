package httpapi

import (
	"errors"
	"net/http"
	"strconv"

	"gchd/limits"
	"gchd/registrar"
)

// authenticate checks HTTP basic auth. On failure it has answered 401 with
// a challenge, 429 when the source is banned or the login locked for it
// (limits.Logins: decided before any password is checked, so the same
// whatever the password), 500 when the account store failed or 503 while
// it is unavailable, and returns that code.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (registrar.Account, int) {
	login, password, ok := r.BasicAuth()
	logins := limits.Logins{Source: s.opts.Guards.AuthSource, Account: s.opts.Guards.AuthAccount}
	source := s.clientIP(r)
	named := ""
	if ok {
		named = login
	}
	if refused := logins.Admit(source, named); refused != "" {
		s.metrics.LimitRejected(refused)
		tooMany(w)
		return registrar.Account{}, http.StatusTooManyRequests
	}
	if ok {
		acc, err := s.auth.Authenticate(r.Context(), login, password)
		if err == nil {
			logins.Succeeded(source, acc.Login)
			return acc, 0
		}
		if !errors.Is(err, registrar.ErrBadCredentials) {
			s.log.Error("authenticate", "login", login, "error", err)
			code := codeInternal
			if errors.Is(err, registrar.ErrUnavailable) {
				code = codeUnavailable
			}
			s.writeCode(w, code)
			return registrar.Account{}, code
		}
		s.log.Info("http basic auth failed", "login", login, "source", source, "remote", r.RemoteAddr)
		banned, locked := logins.Failed(source, login)
		if banned {
			s.log.Warn("source banned after failed logins", "source", source)
		}
		if locked {
			s.log.Warn("login locked for failing sources after failed logins", "login", login)
		}
	}
	w.Header().Set("WWW-Authenticate", "Basic realm="+strconv.Quote(s.opts.Realm)+`, charset="UTF-8"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte("401"))
	return registrar.Account{}, http.StatusUnauthorized
}
