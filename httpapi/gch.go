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
	"unicode/utf8"

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
	c, ctx, release, err := s.readCall(chat.WithSource(r.Context(), "http"), w, r)
	defer release()
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
		res, err = m.run(ctx, s, c)
	}
	code = s.reply(w, r, rid, gm, acc.Login, res, err)
}

// readCall collects gm, pm and an uploaded file from the query string, a
// url-encoded form or a multipart form. A body is read only up to the limit
// of what it may carry: http.max_body_bytes, and for uploadAvatar the file
// limit on top. The returned context carries the upload slot the file was
// buffered in, if any; release gives it back once the call is answered.
func (s *Server) readCall(ctx context.Context, w http.ResponseWriter, r *http.Request) (c call, _ context.Context, release func(), _ error) {
	q := r.URL.Query()
	c = call{gm: q.Get("gm"), pm: q.Get("pm")}
	release = func() {}
	if r.Method != http.MethodPost {
		return c, ctx, release, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		return s.readMultipart(ctx, w, r, c)
	}
	tooBig := fmt.Errorf("%w: body over %d bytes", chat.ErrInvalid, s.opts.MaxBodyBytes)
	if r.ContentLength > s.opts.MaxBodyBytes {
		return c, ctx, release, tooBig
	}
	r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var over *http.MaxBytesError
		if errors.As(err, &over) {
			return c, ctx, release, tooBig
		}
		return c, ctx, release, fmt.Errorf("%w: form: %v", chat.ErrInvalid, err)
	}
	if v := r.PostForm.Get("gm"); v != "" {
		c.gm = v
	}
	if v := r.PostForm.Get("pm"); v != "" {
		c.pm = v
	}
	return c, ctx, release, nil
}

// multipartOverhead is what a multipart body may carry besides its fields
// and its file: boundaries and part headers.
const multipartOverhead = 16 << 10

// errOverBudget ends the reading of a body past its allowance.
var errOverBudget = errors.New("request body over its limit")

// budget is a request body whose allowance readMultipart raises for the
// file, once it knows the file is wanted and how large it may be, and lowers
// again after it. The multipart reader reads ahead by up to 4 KiB, which
// multipartOverhead covers.
type budget struct {
	r    io.Reader
	left int64
}

func (b *budget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errOverBudget
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// readMultipart streams a multipart body: gm and pm fields, and the first
// part that carries a filename, whatever its field name, as the file. Every
// other part is read and dropped. Fields and dropped parts together may
// take http.max_body_bytes. The file is read only for uploadAvatar (or
// while gm is not known yet), in an upload slot of the chat service, up to
// one byte over the limit of its kind (the largest while pm is not known
// yet), so that an oversized file is recognised without being held whole.
func (s *Server) readMultipart(ctx context.Context, w http.ResponseWriter, r *http.Request, c call) (call, context.Context, func(), error) {
	release := func() {}
	upload := func() bool { return c.gm == "" || methodKey(c.gm) == "uploadavatar" }
	tooLarge := func() error {
		if upload() {
			return fmt.Errorf("%w: upload over %d bytes", chat.ErrTooLarge, s.fileLimit(c.pm))
		}
		return fmt.Errorf("%w: body over %d bytes", chat.ErrInvalid, s.opts.MaxBodyBytes)
	}
	fieldsLimit := s.opts.MaxBodyBytes + multipartOverhead
	hardLimit := 2 * fieldsLimit // fields may come before and after the file
	if upload() {
		hardLimit += s.fileLimit(c.pm) + 1
	}
	if r.ContentLength > hardLimit {
		return c, ctx, release, tooLarge()
	}
	body := &budget{r: http.MaxBytesReader(w, r.Body, hardLimit), left: fieldsLimit}
	r.Body = struct {
		io.Reader
		io.Closer
	}{body, r.Body}
	mr, err := r.MultipartReader()
	if err != nil {
		return c, ctx, release, fmt.Errorf("%w: multipart: %v", chat.ErrInvalid, err)
	}
	fields := s.opts.MaxBodyBytes // what fields and dropped parts may still take
	fail := func(err error) (call, context.Context, func(), error) {
		var over *http.MaxBytesError
		if errors.Is(err, errOverBudget) || errors.As(err, &over) {
			return c, ctx, release, tooLarge()
		}
		if errors.Is(err, chat.ErrBusy) || errors.Is(err, context.Canceled) {
			return c, ctx, release, err
		}
		return c, ctx, release, fmt.Errorf("%w: multipart: %v", chat.ErrInvalid, err)
	}
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return c, ctx, release, nil
		}
		if err != nil {
			return fail(err)
		}
		if part.FileName() != "" && c.file == nil && upload() {
			limit := s.fileLimit(c.pm)
			var slot func()
			ctx, slot, err = s.chat.ReserveUpload(ctx)
			if err != nil {
				if errors.Is(err, chat.ErrBusy) {
					s.metrics.LimitRejected("upload_slots")
				}
				return fail(err)
			}
			release = slot
			body.left += limit + 1
			c.file, err = readFile(part, limit+1, r.ContentLength)
			if err != nil {
				return fail(err)
			}
			if int64(len(c.file)) > limit {
				return c, ctx, release, fmt.Errorf("%w: upload over %d bytes", chat.ErrTooLarge, limit)
			}
			body.left = min(body.left, fieldsLimit)
			continue
		}
		v, err := io.ReadAll(io.LimitReader(part, fields+1))
		if err != nil {
			return fail(err)
		}
		if fields -= int64(len(v)); fields < 0 {
			return c, ctx, release, fmt.Errorf("%w: fields of the form over %d bytes", chat.ErrInvalid, s.opts.MaxBodyBytes)
		}
		if part.FileName() == "" {
			switch part.FormName() {
			case "gm":
				c.gm = string(v)
			case "pm":
				c.pm = string(v)
			}
		}
	}
}

// fileLimit is the largest file uploadAvatar may take with pm: the limit of
// pm's t, or the largest of all while pm is not known or not valid.
func (s *Server) fileLimit(pm string) int64 {
	largest := int64(max(s.chat.MaxBytes(chat.MediaVideo), s.chat.MaxBytes(chat.MediaAvatar)))
	var p struct {
		T string `json:"t"`
	}
	if decodePM(pm, &p) != nil {
		return largest
	}
	kind, err := chat.ParseMediaKind(p.T)
	if err != nil {
		return largest
	}
	return int64(s.chat.MaxBytes(kind))
}

// readFile reads r to its end, at most limit bytes, into a buffer allocated
// once: at the request's Content-Length (hint) when it gives one, else at
// the limit. Growing by copies would hold the file about twice over for a
// moment and leave a trail of garbage; a buffer at the limit costs memory
// only where it is written, and the upload slot bounds how many there are.
func readFile(r io.Reader, limit, hint int64) ([]byte, error) {
	size := limit
	if hint > 0 {
		size = min(hint, limit)
	}
	b := make([]byte, 0, size)
	r = io.LimitReader(r, limit)
	for {
		if len(b) == cap(b) {
			if int64(len(b)) >= limit {
				return b, nil
			}
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			if cap(b)-len(b) > 64<<10 {
				// Whoever keeps the file should not keep the slack too.
				b = bytes.Clone(b)
			}
			return b, nil
		}
		if err != nil {
			return b, err
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
		code := Code(err)
		if code == codeInternal || code == codeUnavailable {
			s.log.Error("api call failed", "request_id", rid, "gm", gm, "login", login, "error", err)
		} else {
			s.log.Debug("api call refused", "request_id", rid, "gm", gm, "login", login, "code", code, "reason", err)
		}
		if gm == "downloadAvatar" && code == codeNotFound {
			// A file that is not there and one the caller may not see look alike.
			http.NotFound(w, r)
			return http.StatusNotFound
		}
		if chat.ErrorKindOf(err) == chat.Busy {
			// An upload slot frees within seconds; the database may take longer.
			w.Header().Set("Retry-After", "1")
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
			s.writeCode(w, codeInternal)
			return codeInternal
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
	s.writeCode(w, codeOK)
	return codeOK
}

// writeCode answers a 3-digit result code in the body, and as the status
// unless the codes_in_status switch is off. 503 (the database is down or
// cannot be written) says when to try again, like a 429.
func (s *Server) writeCode(w http.ResponseWriter, code int) {
	status := code
	if !s.opts.CodesInStatus {
		status = http.StatusOK
	}
	if code == codeUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", retryAfterUnavailable)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d", code)
}

// decodePM decodes the pm JSON object into v, read as leniently as the
// reference's reader (lenientJSON). A missing pm, malformed JSON, a value of
// the wrong type or out of range, or trailing data all give 400.
func decodePM(pm string, v any) error {
	if strings.TrimSpace(pm) == "" {
		return fmt.Errorf("%w: pm is missing", chat.ErrInvalid)
	}
	// Go's JSON decoder turns invalid UTF-8 and lone surrogate escapes into
	// U+FFFD without a word: the text would be stored altered. Refuse both
	// before decoding.
	if !utf8.ValidString(pm) {
		return fmt.Errorf("%w: pm is not UTF-8", chat.ErrInvalid)
	}
	if loneSurrogate(pm) {
		return fmt.Errorf("%w: pm escapes half of a UTF-16 surrogate pair", chat.ErrInvalid)
	}
	pm = lenientJSON(pm)
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

// loneSurrogate reports whether a JSON text has a \uD800-\uDFFF escape
// inside a string that is not a high surrogate followed at once by an
// escaped low one: no character is encoded that way. It reads the text
// only as far as strings and escapes go; the decoder checks the rest.
func loneSurrogate(s string) bool {
	inString := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			inString = !inString
		case c == '\\' && inString && i+1 < len(s):
			if s[i+1] != 'u' {
				i++ // a one-letter escape, \\ and \" included
				continue
			}
			r, ok := hex4(s, i+2)
			if !ok {
				return false // malformed: the decoder refuses it
			}
			i += 5
			switch {
			case r >= 0xDC00 && r <= 0xDFFF:
				return true
			case r >= 0xD800 && r <= 0xDBFF:
				if i+2 >= len(s) || s[i+1] != '\\' || s[i+2] != 'u' {
					return true
				}
				lo, ok := hex4(s, i+3)
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return true
				}
				i += 6
			}
		}
	}
	return false
}

// hex4 reads the four hex digits at s[i:].
func hex4(s string, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	n, err := strconv.ParseUint(s[i:i+4], 16, 16)
	return rune(n), err == nil
}
