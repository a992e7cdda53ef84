package httpapi

import (
	"errors"
	"net/http"
	"strconv"

	"gchd/chat"
	"gchd/registrar"
)

// authenticate checks HTTP basic auth. On failure it has answered 401 with
// a challenge (or 500 when the account store failed, 503 while it is
// unavailable) and returns that code.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (registrar.Account, int) {
	login, password, ok := r.BasicAuth()
	g := s.opts.Guards
	source := s.clientIP(r)
	banned := ""
	switch {
	case g.AuthSource != nil && g.AuthSource.Banned(source):
		banned = "auth_source"
	case ok && g.AuthAccount != nil && g.AuthAccount.Banned(login):
		banned = "auth_account"
	}
	if banned != "" {
		s.metrics.LimitRejected(banned)
		tooMany(w)
		return registrar.Account{}, http.StatusTooManyRequests
	}
	if ok {
		acc, err := s.auth.Authenticate(r.Context(), login, password)
		if err == nil {
			if g.AuthSource != nil {
				g.AuthSource.Succeed(source)
			}
			return acc, 0
		}
		if !errors.Is(err, registrar.ErrBadCredentials) {
			s.log.Error("authenticate", "login", login, "error", err)
			code := chat.CodeInternal
			if errors.Is(err, registrar.ErrUnavailable) {
				code = chat.CodeUnavailable
			}
			s.writeCode(w, code)
			return registrar.Account{}, code
		}
		s.log.Info("http basic auth failed", "login", login, "source", source, "remote", r.RemoteAddr)
		if g.AuthSource != nil && g.AuthSource.Fail(source) {
			s.log.Warn("source banned after failed logins", "source", source)
		}
		if g.AuthAccount != nil && g.AuthAccount.Fail(login) {
			s.log.Warn("account locked after failed logins", "login", login)
		}
	}
	w.Header().Set("WWW-Authenticate", "Basic realm="+strconv.Quote(s.opts.Realm)+`, charset="UTF-8"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	w.Write([]byte("401"))
	return registrar.Account{}, http.StatusUnauthorized
}
