package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"gchd/chat"
)

// call is one decoded /gch.ashx request.
type call struct {
	caller chat.Caller
	gm     string
	pm     string
	file   []byte // the uploaded file of a multipart request, if any
}

// result is what a method answers: a JSON document, a file, or just the
// result code 200 (with the new MID for sendMessage).
type result struct {
	json  any
	media *chat.Media
	mid   chat.MID
}

// method is one gm of the API.
type method struct {
	name string // canonical spelling, the metrics label
	run  func(ctx context.Context, s *Server, c call) (result, error)
}

// methodKey normalises a gm: case-insensitive, spaces ignored (the spec
// writes "conf Message").
func methodKey(gm string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(gm), " ", ""))
}

var errNoMethod = fmt.Errorf("%w: unknown gm", chat.ErrInvalid)

// retryAfterUnavailable is the Retry-After of a 503, in seconds: long
// enough for a PostgreSQL restart or a failover to be half done, short
// enough that clients do not give up on a blip.
const retryAfterUnavailable = "5"

func (s *Server) serveGCH(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rid := requestID(r)
	w.Header().Set("X-Request-Id", rid)
	gm, code := "unknown", 0
	defer func() { s.metrics.APIRequest(gm, code, time.Since(start)) }()

	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		w.Header().Set("Allow", "GET, POST")
		code = http.StatusMethodNotAllowed
		http.Error(w, "method not allowed", code)
		return
	}
	acc, failed := s.authenticate(w, r)
	if failed != 0 {
		code = failed
		return
	}
	c, err := s.readCall(w, r)
	var m method
	if err == nil {
		var ok bool
		if m, ok = s.methods[methodKey(c.gm)]; ok {
			gm = m.name
		} else {
			err = errNoMethod
		}
	}
	var res result
	if err == nil {
		c.caller = chat.Caller{Login: acc.Login, DisplayName: acc.DisplayName}
		res, err = m.run(chat.WithSource(r.Context(), "http"), s, c)
	}
	code = s.reply(w, r, rid, gm, acc.Login, res, err)
}

// readCall collects gm, pm and an uploaded file from the query string, a
// url-encoded form or a multipart form.
func (s *Server) readCall(w http.ResponseWriter, r *http.Request) (call, error) {
	q := r.URL.Query()
	c := call{gm: q.Get("gm"), pm: q.Get("pm")}
	if r.Method != http.MethodPost {
		return c, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		return s.readMultipart(w, r, c)
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return c, fmt.Errorf("%w: body over %d bytes", chat.ErrInvalid, s.opts.MaxBodyBytes)
		}
		return c, fmt.Errorf("%w: form: %v", chat.ErrInvalid, err)
	}
	if v := r.PostForm.Get("gm"); v != "" {
		c.gm = v
	}
	if v := r.PostForm.Get("pm"); v != "" {
		c.pm = v
	}
	return c, nil
}

// readMultipart streams a multipart body: gm and pm fields, and the first
// part that carries a filename, whatever its field name, as the file. The
// file is read up to one byte over the largest upload allowed, so that an
// oversized file is recognised without being held whole.
func (s *Server) readMultipart(w http.ResponseWriter, r *http.Request, c call) (call, error) {
	limit := int64(max(s.chat.MaxBytes(chat.MediaVideo), s.chat.MaxBytes(chat.MediaAvatar)))
	r.Body = http.MaxBytesReader(w, r.Body, limit+s.opts.MaxBodyBytes+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		return c, fmt.Errorf("%w: multipart: %v", chat.ErrInvalid, err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return c, nil
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return c, fmt.Errorf("%w: upload over %d bytes", chat.ErrTooLarge, limit)
			}
			return c, fmt.Errorf("%w: multipart: %v", chat.ErrInvalid, err)
		}
		switch {
		case part.FileName() != "" && c.file == nil:
			c.file, err = io.ReadAll(io.LimitReader(part, limit+1))
			if c.file == nil {
				c.file = []byte{}
			}
		case part.FormName() == "gm" || part.FormName() == "pm":
			var v []byte
			v, err = io.ReadAll(io.LimitReader(part, s.opts.MaxBodyBytes+1))
			if int64(len(v)) > s.opts.MaxBodyBytes {
				return c, fmt.Errorf("%w: field %s too long", chat.ErrInvalid, part.FormName())
			}
			if part.FormName() == "gm" {
				c.gm = string(v)
			} else {
				c.pm = string(v)
			}
		}
		part.Close()
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return c, fmt.Errorf("%w: upload over %d bytes", chat.ErrTooLarge, limit)
			}
			return c, fmt.Errorf("%w: multipart: %v", chat.ErrInvalid, err)
		}
	}
}

// reply writes a method's answer and returns the code it answered.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, rid, gm, login string, res result, err error) int {
	if err != nil {
		if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			// The client went away; nobody reads an answer. 499 is the
			// usual code for it in access logs and metrics.
			s.log.Debug("api call abandoned by the client", "request_id", rid, "gm", gm, "login", login)
			return 499
		}
		code := chat.Code(err)
		if code == chat.CodeInternal || code == chat.CodeUnavailable {
			s.log.Error("api call failed", "request_id", rid, "gm", gm, "login", login, "error", err)
		} else {
			s.log.Debug("api call refused", "request_id", rid, "gm", gm, "login", login, "code", code, "reason", err)
		}
		if gm == "downloadAvatar" && code == chat.CodeNotFound {
			// A file that is not there and one the caller may not see look alike.
			http.NotFound(w, r)
			return http.StatusNotFound
		}
		s.writeCode(w, code)
		return code
	}
	switch {
	case res.media != nil:
		serveMedia(w, r, *res.media)
		return http.StatusOK
	case res.json != nil:
		body, err := json.Marshal(res.json)
		if err != nil {
			s.log.Error("encode api answer", "request_id", rid, "gm", gm, "error", err)
			s.writeCode(w, chat.CodeInternal)
			return chat.CodeInternal
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
		return http.StatusOK
	}
	if res.mid != 0 {
		// Set directly to keep the spelling of the design (Go would send X-Gc-Mid).
		w.Header()["X-GC-MID"] = []string{strconv.FormatUint(uint64(res.mid), 10)}
	}
	s.writeCode(w, chat.CodeOK)
	return chat.CodeOK
}

// writeCode answers a 3-digit result code in the body, and as the status
// unless the codes_in_status switch is off. 503 (the database is down or
// cannot be written) says when to try again, like a 429.
func (s *Server) writeCode(w http.ResponseWriter, code int) {
	status := code
	if !s.opts.CodesInStatus {
		status = http.StatusOK
	}
	if code == chat.CodeUnavailable {
		w.Header().Set("Retry-After", retryAfterUnavailable)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d", code)
}

// decodePM decodes the pm JSON object into v. A missing pm, malformed JSON,
// a value of the wrong type or out of range, or trailing data all give 400.
func decodePM(pm string, v any) error {
	if strings.TrimSpace(pm) == "" {
		return fmt.Errorf("%w: pm is missing", chat.ErrInvalid)
	}
	dec := json.NewDecoder(strings.NewReader(pm))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: pm: %v", chat.ErrInvalid, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: pm: data after the JSON object", chat.ErrInvalid)
	}
	if !bytes.HasPrefix(bytes.TrimSpace([]byte(pm)), []byte("{")) {
		return fmt.Errorf("%w: pm is not a JSON object", chat.ErrInvalid)
	}
	return nil
}
