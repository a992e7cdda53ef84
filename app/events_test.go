package app

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

// sseEvent is one event of a stream as a client parses it.
type sseEvent struct {
	id   string
	data string
	at   time.Time // when the client had it
}

// streamEvent is an event's data.
type streamEvent struct {
	GID uint32 `json:"gid"`
	MID uint64 `json:"mid"`
	K   string `json:"k"`
	L   string `json:"l"`
	DN  string `json:"dn"`
	MB  string `json:"mb"`
	TS  string `json:"ts"`
}

func (e sseEvent) decode(t testing.TB) streamEvent {
	t.Helper()
	var v streamEvent
	if err := json.Unmarshal([]byte(e.data), &v); err != nil {
		t.Fatalf("event data %q: %v", e.data, err)
	}
	if e.id != strconv.FormatUint(v.MID, 10) {
		t.Fatalf("event id %q, data mid %d", e.id, v.MID)
	}
	return v
}

// sseStream is an open GET /gch/events, read by a goroutine of its own.
type sseStream struct {
	t        testing.TB
	res      *http.Response
	cancel   context.CancelFunc
	events   chan sseEvent
	ended    chan struct{}
	endErr   error // after ended: io.EOF for a clean end of the response
	mu       sync.Mutex
	comments []string
}

// streamClient has no overall timeout: a stream is read for as long as
// the test wants.
var streamClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

// openEvents opens login's stream with extra request headers and query
// (e.g. "last_event_id=5"), failing the test unless it answers 200.
func openEvents(t testing.TB, s *server, login string, header http.Header, query string) *sseStream {
	t.Helper()
	st, res := tryEvents(t, s, login, header, query)
	if st == nil {
		t.Fatalf("GET /gch/events as %s: %d %s", login, res.status, res.body)
	}
	return st
}

// tryEvents opens a stream, or returns the answer that refused it.
func tryEvents(t testing.TB, s *server, login string, header http.Header, query string) (*sseStream, reply) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	url := s.base + "/gch/events"
	if query != "" {
		url += "?" + query
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	if login != "" {
		req.SetBasicAuth(login, "pw-"+login)
	}
	res, err := streamClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET /gch/events: %v", err)
	}
	if res.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		cancel()
		return nil, reply{status: res.StatusCode, body: body, header: res.Header}
	}
	st := &sseStream{t: t, res: res, cancel: cancel, events: make(chan sseEvent, 4096), ended: make(chan struct{})}
	go st.read()
	t.Cleanup(st.close)
	return st, reply{status: res.StatusCode, header: res.Header}
}

func (st *sseStream) read() {
	defer close(st.ended)
	sc := bufio.NewScanner(st.res.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var ev sseEvent
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if ev.data != "" {
				ev.at = time.Now()
				st.events <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, ":"):
			st.mu.Lock()
			st.comments = append(st.comments, line)
			st.mu.Unlock()
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	st.endErr = sc.Err()
	if st.endErr == nil {
		st.endErr = io.EOF
	}
}

func (st *sseStream) close() {
	st.cancel()
	st.res.Body.Close()
	<-st.ended
}

// next returns the next event, or false when none comes within wait.
func (st *sseStream) next(wait time.Duration) (sseEvent, bool) {
	select {
	case ev := <-st.events:
		return ev, true
	case <-time.After(wait):
		return sseEvent{}, false
	}
}

// take returns the next n events, failing the test if they do not come.
func (st *sseStream) take(n int) []streamEvent {
	st.t.Helper()
	out := make([]streamEvent, 0, n)
	for len(out) < n {
		ev, ok := st.next(15 * time.Second)
		if !ok {
			st.t.Fatalf("stream gave %d events, want %d: %+v", len(out), n, out)
		}
		out = append(out, ev.decode(st.t))
	}
	return out
}

// none fails the test if an event comes within wait.
func (st *sseStream) none(wait time.Duration, why string) {
	st.t.Helper()
	if ev, ok := st.next(wait); ok {
		st.t.Fatalf("%s: got %s", why, ev.data)
	}
}

func midsOf(evs []streamEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.MID
	}
	return out
}

// eventsServer starts a server of the engine with SIP over UDP and the
// accounts alice, bob and carol.
func eventsServer(t *testing.T, engine storage.Engine, mutate ...func(*configs.Config)) *server {
	t.Helper()
	s := startEngine(t, engine, mutate...)
	for _, l := range []string{"alice", "bob", "carol"} {
		s.addAccount(l, "pw-"+l, strings.ToUpper(l[:1])+l[1:])
	}
	return s
}

// Two streams of one account and one of another: messages posted over the
// API and over SIP reach the right streams, in MID order, with the fields
// and values getMessages shows; the sender's own are on her streams too.
func TestEventStreams(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := eventsServer(t, engine)
		if r := s.get("/gch/events", "", "", nil); r.status != 401 || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), `Basic realm="test.local"`) {
			t.Fatalf("without credentials: %s %v", r, r.header)
		}
		if r := s.get("/gch/events", "alice", "wrong", nil); r.status != 401 {
			t.Fatalf("wrong password: %s", r)
		}
		if r := s.get("/gch/events", "alice", "pw-alice", map[string][]string{"last_event_id": {"x1"}}); r.status != 400 {
			t.Fatalf("last_event_id x1: %s", r)
		}
		id := groupOf(t, s, "alice", "bob")
		s.must("bob", "joinGroup", map[string]any{"id": id})
		other := groupOf(t, s, "carol") // nobody of the streams is in it

		alice1, alice2 := openEvents(t, s, "alice", nil, ""), openEvents(t, s, "alice", nil, "")
		bob := openEvents(t, s, "bob", nil, "")
		for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
			if got := bob.res.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
		phone := newPhone(t, s, "bob", "UDP")
		phone.register()

		// A fresh stream starts live: nothing of before.
		alice1.none(200*time.Millisecond, "a stream without Last-Event-ID")
		byAPI := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "über die API 🎉", "dn": "Alice A."})
		sendMID(t, s, "carol", map[string]any{"id": other, "mb": "not for them"})
		res := phone.message(fmt.Sprintf("gc-%d", id), "über SIP")
		if res.StatusCode != 202 || res.GetHeader("X-GC-MID") == nil {
			t.Fatalf("SIP post: %s", res.StartLine())
		}
		bySIP, _ := strconv.ParseUint(res.GetHeader("X-GC-MID").Value(), 10, 64)
		if !(byAPI < bySIP) {
			t.Fatalf("MIDs %d then %d", byAPI, bySIP)
		}

		var hist struct{ M []map[string]any }
		s.must("alice", "getMessages", map[string]any{"id": id}).json(t, &hist)
		logged := map[uint64]map[string]any{}
		for _, m := range hist.M {
			logged[uint64(m["mid"].(float64))] = m
		}
		for name, st := range map[string]*sseStream{"alice 1": alice1, "alice 2": alice2, "bob": bob} {
			var raw []sseEvent
			for range 2 {
				ev, ok := st.next(15 * time.Second)
				if !ok {
					t.Fatalf("%s: %d events, want 2", name, len(raw))
				}
				raw = append(raw, ev)
			}
			var got []uint64
			for _, ev := range raw {
				var m map[string]any
				json.Unmarshal([]byte(ev.data), &m)
				if m["gid"] != float64(id) {
					t.Errorf("%s: gid %v, want %d", name, m["gid"], id)
				}
				delete(m, "gid")
				mid := uint64(m["mid"].(float64))
				if want := logged[mid]; fmt.Sprint(m) != fmt.Sprint(want) {
					t.Errorf("%s: event %v, getMessages %v", name, m, want)
				}
				got = append(got, mid)
			}
			if !slices.Equal(got, []uint64{byAPI, bySIP}) {
				t.Errorf("%s: MIDs %v, want %v", name, got, []uint64{byAPI, bySIP})
			}
			st.none(200*time.Millisecond, name+" after the two messages")
		}
		if v, _ := metricValue(t, s, "gchd_http_event_streams"); v != 3 {
			t.Errorf("gchd_http_event_streams = %v, want 3", v)
		}
		alice2.close()
		eventually(t, func() bool { v, _ := metricValue(t, s, "gchd_http_event_streams"); return v == 2 })
	})
}

// A client that reconnects with Last-Event-ID (or last_event_id) gets what
// it missed from the log, then live events, with no gap and nothing
// twice, also while messages keep coming.
func TestEventStreamResume(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := eventsServer(t, engine)
		id := groupOf(t, s, "alice", "bob")
		s.must("bob", "joinGroup", map[string]any{"id": id})
		bob := openEvents(t, s, "bob", nil, "")
		first := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "one"})
		if got := bob.take(1); got[0].MID != first || got[0].MB != "one" {
			t.Fatalf("first event %+v", got)
		}
		bob.close()
		missed := []uint64{
			sendMID(t, s, "alice", map[string]any{"id": id, "mb": "two"}),
			sendMID(t, s, "bob", map[string]any{"id": id, "mb": "three, bob's own"}),
		}
		s.must("alice", "setGroupSubject", map[string]any{"id": id, "gs": "Renamed"})

		// The header, as EventSource sends it; it wins over the query
		// the stream was first opened with.
		re := openEvents(t, s, "bob", http.Header{"Last-Event-ID": {strconv.FormatUint(first, 10)}}, "last_event_id=0")
		got := re.take(3)
		if !slices.Equal(midsOf(got[:2]), missed) || got[2].K != "EG" || got[2].MID <= missed[1] {
			t.Fatalf("resumed with %+v, want %v then EG", got, missed)
		}
		live := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "four"})
		if g := re.take(1); g[0].MID != live {
			t.Fatalf("live after resume: %+v, want %d", g, live)
		}
		re.none(200*time.Millisecond, "after the live event")
		re.close()
		// The query, for clients that cannot set headers.
		q := openEvents(t, s, "bob", nil, "last_event_id="+strconv.FormatUint(missed[1], 10))
		if g := q.take(2); g[0].K != "EG" || g[1].MID != live {
			t.Fatalf("resumed by query: %+v", g)
		}
		q.close()

		// Reconnecting again and again while alice posts: every MID
		// once, in order.
		const total = 120
		var posted []uint64
		done := make(chan struct{})
		go func() {
			defer close(done)
			for n := range total {
				posted = append(posted, sendMID(t, s, "alice", map[string]any{"id": id, "mb": fmt.Sprint("burst ", n)}))
			}
		}()
		var seen []uint64
		last := live
		for len(seen) < total {
			st := openEvents(t, s, "bob", http.Header{"Last-Event-ID": {strconv.FormatUint(last, 10)}}, "")
			for range 1 + len(seen)%17 {
				ev, ok := st.next(15 * time.Second)
				if !ok {
					t.Fatalf("stalled after %d of %d", len(seen), total)
				}
				e := ev.decode(t)
				seen = append(seen, e.MID)
				last = e.MID
				if len(seen) == total {
					break
				}
			}
			st.close()
		}
		<-done
		if !slices.Equal(seen, posted) {
			t.Fatalf("resumed streams showed %v,\nposted %v", seen, posted)
		}
	})
}

// A member removed from a group gets the notice of her removal and then
// nothing more of it; her other groups go on.
func TestEventStreamMemberRemoved(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := eventsServer(t, engine)
		id := groupOf(t, s, "alice", "carol")
		s.must("carol", "joinGroup", map[string]any{"id": id})
		still := groupOf(t, s, "bob", "carol")
		s.must("carol", "joinGroup", map[string]any{"id": still})
		carol := openEvents(t, s, "carol", nil, "")
		before := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "before"})
		s.must("alice", "delMember", map[string]any{"id": id, "gm": []string{"carol"}})
		sendMID(t, s, "alice", map[string]any{"id": id, "mb": "after: not for carol"})
		marker := sendMID(t, s, "bob", map[string]any{"id": still, "mb": "the other group"})
		got := carol.take(3)
		if got[0].MID != before || got[1].K != "EG" || got[1].GID != id || got[2].MID != marker {
			t.Fatalf("carol's stream: %+v", got)
		}
		// Nor does a resume from before her removal show more.
		re := openEvents(t, s, "carol", http.Header{"Last-Event-ID": {strconv.FormatUint(before-1, 10)}}, "")
		if g := re.take(3); !slices.Equal(midsOf(g), midsOf(got)) {
			t.Fatalf("resumed: %+v, live %+v", g, got)
		}
		re.none(200*time.Millisecond, "resumed after the marker")
	})
}

// Streams are bounded per account and per source (429, Retry-After).
// Refusals keep their HTTP status even with api.codes_in_status off: an
// EventSource sees nothing else.
func TestEventStreamLimits(t *testing.T) {
	s := eventsServer(t, storage.SQLite, func(c *configs.Config) {
		c.HTTP.EventsPerAccount, c.HTTP.EventsPerSource = 2, 3
		c.API.CodesInStatus = false
	})
	if _, r := tryEvents(t, s, "alice", http.Header{"Last-Event-ID": {"-1"}}, ""); r.status != 400 || string(r.body) != "400" {
		t.Fatalf("Last-Event-ID -1: %s", r)
	}
	openEvents(t, s, "alice", nil, "")
	a2 := openEvents(t, s, "alice", nil, "")
	_, r := tryEvents(t, s, "alice", nil, "")
	if r.status != 429 || r.header.Get("Retry-After") != "1" {
		t.Fatalf("third stream of alice: %s %v", r, r.header)
	}
	openEvents(t, s, "bob", nil, "")
	if _, r := tryEvents(t, s, "carol", nil, ""); r.status != 429 {
		t.Fatalf("fourth stream from the address: %s", r)
	}
	a2.close()
	eventually(t, func() bool {
		st, _ := tryEvents(t, s, "carol", nil, "")
		if st != nil {
			st.close()
		}
		return st != nil
	})
	if !metricAtLeast(t, s, `gchd_limits_rejections_total{limit="events_per_account"}`, 1) ||
		!metricAtLeast(t, s, `gchd_limits_rejections_total{limit="events_per_source"}`, 1) {
		t.Error("the refusals are not counted")
	}
}

// rawStream is a stream opened over a bare TCP connection, for tests that
// need to control reading (or not read at all) and many idle streams.
type rawStream struct {
	conn net.Conn
	br   *bufio.Reader
}

// openRaw sends the request and reads the answer's header. rcvbuf > 0
// shrinks the socket's receive buffer first, so that a reader that stops
// reading is soon felt by the server.
func openRaw(t testing.TB, s *server, login string, rcvbuf int) *rawStream {
	t.Helper()
	d := net.Dialer{}
	if rcvbuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
			return errors.Join(err, serr)
		}
	}
	conn, err := d.Dial("tcp", strings.TrimPrefix(s.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	auth := base64.StdEncoding.EncodeToString([]byte(login + ":pw-" + login))
	fmt.Fprintf(conn, "GET /gch/events HTTP/1.1\r\nHost: gchd\r\nAuthorization: Basic %s\r\n\r\n", auth)
	br := bufio.NewReaderSize(conn, 512)
	status, err := br.ReadString('\n')
	if err != nil || !strings.Contains(status, " 200 ") {
		t.Fatalf("raw stream: %q %v", status, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	return &rawStream{conn: conn, br: br}
}

// A reader that stops reading is dropped once a write to it does not
// finish within http.events_write_timeout; the others go on, keep-alive
// comments keep an idle stream open, and a stream outlives the server's
// read and write timeouts.
func TestEventStreamSlowReaderAndKeepalive(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		cfg.HTTP.EventsWriteTimeout = 500 * time.Millisecond
		cfg.HTTP.EventsKeepalive = 200 * time.Millisecond
		s := startTuned(t, cfg, func(a *App) {
			// As if the server's own timeouts were short: a stream
			// must not end when they pass.
			for _, h := range a.httpServers {
				h.srv.ReadTimeout, h.srv.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
			}
		})
		for _, l := range []string{"alice", "bob", "carol"} {
			s.addAccount(l, "pw-"+l, l)
		}
		id := groupOf(t, s, "alice", "bob", "carol")
		s.must("bob", "joinGroup", map[string]any{"id": id})
		s.must("carol", "joinGroup", map[string]any{"id": id})
		reader := openEvents(t, s, "carol", nil, "")
		slow := openRaw(t, s, "bob", 4096)

		time.Sleep(time.Second) // past the server's timeouts, idle
		reader.mu.Lock()
		keepalives := len(reader.comments)
		reader.mu.Unlock()
		if keepalives < 2 {
			t.Errorf("%d keep-alive comments in a second of silence every 200ms", keepalives)
		}
		first := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "after a quiet second"})
		if got := reader.take(1); got[0].MID != first {
			t.Fatalf("after the server's timeouts: %+v", got)
		}

		// 16 KiB messages until the server gives up on bob, who reads
		// nothing.
		text := strings.Repeat("x", 16<<10)
		sent := 1
		deadline := time.Now().Add(60 * time.Second)
		for !metricAtLeast(t, s, `gchd_http_event_streams_dropped_total{reason="write_timeout"}`, 1) &&
			!metricAtLeast(t, s, `gchd_http_event_streams_dropped_total{reason="backlog"}`, 1) {
			if time.Now().After(deadline) {
				t.Fatalf("the slow reader is still served after %d messages", sent)
			}
			sendMID(t, s, "alice", map[string]any{"id": id, "mb": text})
			sent++
			if sent%50 == 0 {
				time.Sleep(600 * time.Millisecond) // a write blocks for the timeout
			}
		}
		byTimeout, _ := metricValue(t, s, `gchd_http_event_streams_dropped_total{reason="write_timeout"}`)
		byBacklog, _ := metricValue(t, s, `gchd_http_event_streams_dropped_total{reason="backlog"}`)
		t.Logf("slow reader dropped after %d messages of 16 KiB (write_timeout %v, backlog %v)", sent, byTimeout, byBacklog)
		if got := reader.take(sent - 1); len(got) != sent-1 {
			t.Fatalf("the reader that kept up got %d of %d", len(got), sent-1)
		}
		eventually(t, func() bool { v, _ := metricValue(t, s, "gchd_http_event_streams"); return v == 1 })
		// The dropped stream's connection is closed: after what is in
		// its buffers, bob's socket reads the end.
		slow.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := io.Copy(io.Discard, slow.br); err != nil {
			t.Fatalf("the dropped stream's connection did not end: %v", err)
		}
	})
}

// startTuned is start with a hook between New and Run.
func startTuned(t testing.TB, cfg configs.Config, tune func(*App)) *server {
	t.Helper()
	return startWith(t, cfg, testLogger(), tune)
}

// Shutdown ends every stream at once and cleanly (the response ends as
// HTTP says), rather than wait out the grace period.
func TestEventStreamShutdown(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := eventsServer(t, engine, func(c *configs.Config) { c.Shutdown.Grace = 20 * time.Second })
		var streams []*sseStream
		for _, l := range []string{"alice", "alice", "bob", "carol"} {
			streams = append(streams, openEvents(t, s, l, nil, ""))
		}
		start := time.Now()
		s.stop()
		took := time.Since(start)
		for i, st := range streams {
			select {
			case <-st.ended:
			case <-time.After(5 * time.Second):
				t.Fatalf("stream %d still open after the server stopped", i)
			}
			if st.endErr != io.EOF {
				t.Errorf("stream %d ended with %v, want a clean end", i, st.endErr)
			}
		}
		if took > 5*time.Second {
			t.Errorf("stopping with 4 open streams took %v (grace 20s)", took)
		}
		t.Logf("stopped with 4 open streams in %v", took)
	})
}

// memoryInUse is the heap and stacks in use after a collection, and the
// process's resident size.
func memoryInUse() (heap, stacks, rss uint64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		var size, resident uint64
		fmt.Sscan(string(b), &size, &resident)
		rss = resident * uint64(os.Getpagesize())
	}
	return ms.HeapInuse, ms.StackInuse, rss
}

// 1,000 idle streams cost bounded memory. The figure per stream is in
// docs/PERFORMANCE.md ("Live events"):
//
//	go test -count=1 -run TestEventStreamIdleMemory -v ./app/
//
// It is measured in this process, which holds the test's 1,000 client
// sockets too (a connection each, no goroutine, a 512-byte buffer).
func TestEventStreamIdleMemory(t *testing.T) {
	const n = 1000
	s := eventsServer(t, storage.SQLite, func(c *configs.Config) {
		c.HTTP.EventsPerAccount, c.HTTP.EventsPerSource = 0, 0
	})
	id := groupOf(t, s, "alice", "bob")
	s.must("bob", "joinGroup", map[string]any{"id": id})
	// Warm up what every stream shares (account cache, pools).
	for range 20 {
		openRaw(t, s, "bob", 0).conn.Close()
	}
	eventually(t, func() bool { v, _ := metricValue(t, s, "gchd_http_event_streams"); return v == 0 })
	heapBefore, stacksBefore, rssBefore := memoryInUse()
	streams := make([]*rawStream, n)
	for i := range streams {
		streams[i] = openRaw(t, s, "bob", 0)
	}
	eventually(t, func() bool { v, _ := metricValue(t, s, "gchd_http_event_streams"); return v == n })
	heapAfter, stacksAfter, rssAfter := memoryInUse()
	per := func(before, after uint64) float64 { return float64(int64(after)-int64(before)) / n / 1024 }
	perGo := per(heapBefore+stacksBefore, heapAfter+stacksAfter) * 1024
	// RSS moves less when the runtime reuses pages it had freed: the Go
	// figure is the one that holds.
	t.Logf("%d idle streams, per stream: heap %+.1f KiB, goroutine stacks %+.1f KiB, together %+.1f KiB; RSS %+.1f KiB (RSS %d→%d MiB)",
		n, per(heapBefore, heapAfter), per(stacksBefore, stacksAfter), perGo/1024, per(rssBefore, rssAfter), rssBefore>>20, rssAfter>>20)
	if perGo > 64<<10 {
		t.Errorf("an idle stream costs %.0f bytes of heap and stack, more than 64 KiB", perGo)
	}
	// They are all live: one message reaches every one.
	mid := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "to a thousand streams"})
	want := fmt.Sprintf("id: %d\n", mid)
	for i, st := range streams {
		st.conn.SetReadDeadline(time.Now().Add(15 * time.Second))
		for {
			line, err := st.br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			if strings.HasSuffix(line, want) {
				break
			}
		}
	}
}

// A message reaches a member's open stream within 100 ms of the post that
// commits it. The figures are in docs/PERFORMANCE.md ("Live events"):
//
//	go test -count=1 -run TestEventStreamLatency -v ./app/
func TestEventStreamLatency(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		const posts = 200
		s := eventsServer(t, engine)
		id := groupOf(t, s, "alice", "bob")
		s.must("bob", "joinGroup", map[string]any{"id": id})
		bob := openEvents(t, s, "bob", nil, "")
		var toEvent, toAnswer []time.Duration
		for n := range posts {
			start := time.Now()
			mid := sendMID(t, s, "alice", map[string]any{"id": id, "mb": fmt.Sprint("ping ", n)})
			answered := time.Since(start)
			ev, ok := bob.next(10 * time.Second)
			if !ok || ev.decode(t).MID != mid {
				t.Fatalf("post %d: no event %d (%v, %s)", n, mid, ok, ev.data)
			}
			toEvent = append(toEvent, ev.at.Sub(start))
			toAnswer = append(toAnswer, answered)
		}
		slices.Sort(toEvent)
		slices.Sort(toAnswer)
		q := func(d []time.Duration, p float64) time.Duration { return d[int(p*float64(len(d)-1))] }
		t.Logf("%s, %d posts one after another: post to event p50 %v, p99 %v, max %v; post to the API's answer p50 %v, p99 %v",
			engine, posts, q(toEvent, .5), q(toEvent, .99), toEvent[len(toEvent)-1], q(toAnswer, .5), q(toAnswer, .99))
		if p50 := q(toEvent, .5); p50 > 100*time.Millisecond {
			t.Errorf("half the events took over %v from the post, want within 100 ms", p50)
		}
	})
}
