package httpapi

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"time"

	"gchd/chat"
)

// serveMedia answers a group file with its Content-Type, a strong ETag over
// its content, Last-Modified, and Range and conditional request support.
func serveMedia(w http.ResponseWriter, r *http.Request, m chat.Media) {
	sum := sha256.Sum256(m.Data)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:16])+`"`)
	w.Header().Set("Content-Type", m.ContentType)
	w.Header().Set("Cache-Control", "private, no-cache")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeContent(w, r, "", m.Updated.Truncate(time.Second), bytes.NewReader(m.Data))
}

// serveGroupFile serves GET /groupchat/{id}/video and /video-thumb to the
// group's members. No such group, no such file and not a member all answer
// 404, so that nothing leaks about groups the caller is not in.
func (s *Server) serveGroupFile(kind chat.MediaKind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := requestID(r)
		w.Header().Set("X-Request-Id", rid)
		code := http.StatusOK
		defer func() { s.metrics.APIRequest("groupchat/"+string(kind), code, time.Since(start)) }()
		acc, failed := s.authenticate(w, r)
		if failed != 0 {
			code = failed
			return
		}
		id, err := strconv.ParseUint(r.PathValue("id"), 10, 32)
		if err != nil {
			code = http.StatusNotFound
			http.NotFound(w, r)
			return
		}
		m, err := s.chat.GetMedia(r.Context(), chat.Caller{Login: acc.Login}, chat.GroupID(id), kind)
		switch {
		case Code(err) == codeNotFound:
			code = http.StatusNotFound
			http.NotFound(w, r)
		case err != nil:
			s.log.Error("serve group file", "request_id", rid, "group", id, "kind", kind, "error", err)
			code = Code(err) // 500, or 503 with Retry-After while the database is unavailable
			if code == codeUnavailable {
				w.Header().Set("Retry-After", retryAfterUnavailable)
			}
			http.Error(w, strconv.Itoa(code), code)
		default:
			serveMedia(w, r, m)
		}
	}
}
