package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"gchd/chat"
	"gchd/metrics"
)

// EventOptions bound the live event streams (GET /gch/events).
type EventOptions struct {
	// PerAccount and PerSource bound the streams open at once per login
	// and per client address; 0: no bound.
	PerAccount, PerSource int
	// Keepalive is how long a stream stays silent before a comment line
	// keeps proxies and NAT from closing it.
	Keepalive time.Duration
	// WriteTimeout bounds each write to a stream: a reader that does not
	// take it within this is dropped.
	WriteTimeout time.Duration
}

// replayPage is how many events of the log a resuming stream reads at once.
const replayPage = 100

// streamCounts counts the open streams per login and per source.
type streamCounts struct {
	mu        sync.Mutex
	byAccount map[string]int
	bySource  map[string]int
}

// admit counts a new stream, or names the limit it is over.
func (c *streamCounts) admit(login, source string, perAccount, perSource int) (release func(), refused string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byAccount == nil {
		c.byAccount, c.bySource = map[string]int{}, map[string]int{}
	}
	switch {
	case perAccount > 0 && c.byAccount[login] >= perAccount:
		return nil, "events_per_account"
	case perSource > 0 && c.bySource[source] >= perSource:
		return nil, "events_per_source"
	}
	c.byAccount[login]++
	c.bySource[source]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.byAccount[login]--; c.byAccount[login] == 0 {
			delete(c.byAccount, login)
		}
		if c.bySource[source]--; c.bySource[source] == 0 {
			delete(c.bySource, source)
		}
	}, ""
}

// streamEventJSON is one event on a stream: getMessages' fields and the
// group, which a stream of every group needs.
type streamEventJSON struct {
	GID uint32 `json:"gid"`
	eventJSON
}

// serveEvents streams the caller's events as Server-Sent Events: first,
// for a client that resumes (Last-Event-ID), what it missed, read from the
// log; then the live events, each released only once every lower MID is
// settled (chat's event hub). Event ids are MIDs, one sequence over all
// groups, so the highest id a client saw says where it is.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	rid := requestID(r)
	w.Header().Set("X-Request-Id", rid)
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	acc, failed := s.authenticate(w, r)
	if failed != 0 {
		return
	}
	after, resume, err := lastEventID(r)
	if err != nil {
		s.log.Debug("event stream refused", "request_id", rid, "login", acc.Login, "reason", err)
		statusCode(w, codeInvalid)
		return
	}
	opts := s.opts.Events
	release, refused := s.streams.admit(acc.Login, s.clientIP(r), opts.PerAccount, opts.PerSource)
	if refused != "" {
		s.metrics.LimitRejected(refused)
		tooMany(w)
		return
	}
	defer release()
	caller := chat.Caller{Login: acc.Login, DisplayName: acc.DisplayName}
	sub, err := s.chat.Subscribe(caller)
	if err != nil {
		w.Header().Set("Retry-After", "1") // a restart, or another node behind the balancer
		statusCode(w, Code(err))
		return
	}
	defer sub.Close()
	s.metrics.EventStreamOpened()
	defer s.metrics.EventStreamClosed()

	st := &eventStream{w: w, rc: http.NewResponseController(w), timeout: opts.WriteTimeout, last: after}
	// The server's read timeout would end the stream (Go cancels a
	// request whose connection's read deadline passes); a client that
	// went away shows as a failed write or a closed connection instead.
	st.rc.SetReadDeadline(time.Time{})
	// The end of the response is written after the handler returns:
	// give it a deadline of its own.
	defer func() { st.rc.SetWriteDeadline(time.Now().Add(st.timeout)) }()
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx would hold events back in its buffer
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if !st.flush() {
		return
	}
	s.log.Debug("event stream opened", "request_id", rid, "login", acc.Login, "resume", resume, "after", after, "start", sub.Start())

	end := func(why error) {
		if errors.Is(why, chat.ErrSlowReader) {
			s.metrics.EventStreamDropped(metrics.DropBacklog)
		}
		if errors.Is(st.err, os.ErrDeadlineExceeded) {
			s.metrics.EventStreamDropped(metrics.DropWriteTimeout)
			why = fmt.Errorf("write timeout: %w", st.err)
		}
		s.log.Debug("event stream ended", "request_id", rid, "login", acc.Login, "last", st.last, "reason", why)
	}
	if resume {
		for cursor := after; ; {
			evs, more, err := s.chat.EventsFor(r.Context(), caller, cursor, sub.Start(), replayPage)
			if err != nil {
				if r.Context().Err() == nil {
					s.log.Error("event stream replay", "request_id", rid, "login", acc.Login, "after", cursor, "error", err)
				}
				end(err)
				return
			}
			if !st.send(evs) {
				end(st.err)
				return
			}
			if !more {
				break
			}
			cursor = evs[len(evs)-1].MID
		}
	}
	keepalive := time.NewTicker(opts.Keepalive)
	defer keepalive.Stop()
	for {
		select {
		case <-r.Context().Done():
			end(r.Context().Err())
			return
		case <-sub.Ready():
			evs, err := sub.Take()
			if !st.send(evs) {
				end(st.err)
				return
			}
			if err != nil {
				end(err)
				return
			}
			keepalive.Reset(opts.Keepalive)
		case <-keepalive.C:
			if !st.write([]byte(": keepalive\n\n")) {
				end(st.err)
				return
			}
		}
	}
}

// statusCode answers a refused stream with the code as the status and the
// body, whatever api.codes_in_status: that switch is for /gch.ashx
// clients, and an EventSource tells a refusal only by its status.
func statusCode(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	fmt.Fprintf(w, "%d", code)
}

// lastEventID reads where a resuming client is: the Last-Event-ID header
// (what EventSource sends when it reconnects), else the query's
// last_event_id (for a client that cannot set headers). The header wins:
// a browser reconnects to the URL it opened, with the query it had then.
func lastEventID(r *http.Request) (chat.MID, bool, error) {
	v, name := r.Header.Get("Last-Event-ID"), "Last-Event-ID"
	if strings.TrimSpace(v) == "" {
		v, name = r.URL.Query().Get("last_event_id"), "last_event_id"
	}
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%w: %s %q is not a MID", chat.ErrInvalid, name, v)
	}
	return chat.MID(n), true, nil
}

// eventStream writes events to one response, each write bounded.
type eventStream struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
	last    chat.MID // the highest id sent, or where the client resumed
	buf     bytes.Buffer
	err     error // the write that failed
}

// writeChunk is how much of a batch of events is collected before it is
// written: a page of the log or a burst is not held whole.
const writeChunk = 32 << 10

// send writes the events above the last id sent and flushes them.
func (st *eventStream) send(evs []chat.Event) bool {
	st.buf.Reset()
	for _, ev := range evs {
		if ev.MID <= st.last {
			continue // the log and the live stream overlap where they meet
		}
		data, err := json.Marshal(streamEventJSON{GID: uint32(ev.Group), eventJSON: encodeEvent(ev)})
		if err != nil {
			st.err = err
			return false
		}
		// JSON escapes line breaks: the object is one data line.
		fmt.Fprintf(&st.buf, "id: %d\ndata: %s\n\n", ev.MID, data)
		st.last = ev.MID
		if st.buf.Len() >= writeChunk {
			if !st.write(st.buf.Bytes()) {
				return false
			}
			st.buf.Reset()
		}
	}
	ok := st.buf.Len() == 0 || st.write(st.buf.Bytes())
	if st.buf.Cap() > 2*writeChunk {
		st.buf = bytes.Buffer{} // one large message's buffer is not kept for an idle stream
	}
	return ok
}

// write writes p and flushes it to the client within the write timeout.
// The deadline replaces the server's WriteTimeout, which would otherwise
// end every stream that long after it opened.
func (st *eventStream) write(p []byte) bool {
	if err := st.rc.SetWriteDeadline(time.Now().Add(st.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		st.err = err
		return false
	}
	if len(p) > 0 {
		if _, err := st.w.Write(p); err != nil {
			st.err = err
			return false
		}
	}
	if err := st.rc.Flush(); err != nil {
		st.err = err
		return false
	}
	return true
}

// flush sends what is written so far (the header).
func (st *eventStream) flush() bool { return st.write(nil) }
