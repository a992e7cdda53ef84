package browser

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"testing"
)

// streamRequest is one GET /gch/events the browser made, as the proxy saw it.
type streamRequest struct {
	lastEventID string
	authorized  bool // it carried an Authorization header
}

// An app that uses only the HTTP API, in a real browser: a page in
// headless Chromium opens an EventSource on /gch/events and shows a message
// posted over the API; when its stream is cut, the browser reconnects with
// Last-Event-ID and shows what was posted meanwhile, once.
//
// EventSource cannot set an Authorization header. The page is served from
// the same origin as the API (the test's server proxies /gch/events to
// gchd, as a reverse proxy in front of an app and gchd would) and is
// opened as http://browser:pw-browser@host/events.html: the browser answers
// the page's basic-auth challenge with those credentials and sends them
// with the EventSource's request too.
func TestEventSourceShowsPostedMessage(t *testing.T) {
	chromium := chromiumPath(t)
	g := startGCHD(t, map[string]string{"alice": "Alice", "browser": "Browser"})
	api := &apiClient{t: t, base: "http://" + g.app.HTTPAddr() + "/gch.ashx"}
	var created struct{ ID uint32 }
	api.json("alice", "addGroup", map[string]any{"gs": "Live", "gm": []map[string]string{{"l": "browser"}}}, &created)
	gid := created.ID
	api.ok("browser", "joinGroup", map[string]any{"id": gid})

	upstream, err := url.Parse("http://" + g.app.HTTPAddr())
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	var (
		mu       sync.Mutex
		requests []streamRequest
		cuts     []context.CancelFunc
	)
	page := startPage(t, func(mux *http.ServeMux) {
		mux.HandleFunc("GET /events.html", func(w http.ResponseWriter, r *http.Request) {
			if login, password, ok := r.BasicAuth(); !ok || login != "browser" || password != "pw-browser" {
				w.Header().Set("WWW-Authenticate", `Basic realm="`+domain+`", charset="UTF-8"`)
				http.Error(w, "401", http.StatusUnauthorized)
				return
			}
			w.Header().Set("Cache-Control", "no-store")
			http.ServeFile(w, r, "testdata/events.html")
		})
		mux.HandleFunc("GET /gch/events", func(w http.ResponseWriter, r *http.Request) {
			ctx, cut := context.WithCancel(r.Context())
			mu.Lock()
			requests = append(requests, streamRequest{lastEventID: r.Header.Get("Last-Event-ID"), authorized: r.Header.Get("Authorization") != ""})
			cuts = append(cuts, cut)
			mu.Unlock()
			proxy.ServeHTTP(w, r.WithContext(ctx))
		})
	})
	pageURL, err := url.Parse(page.url + "/events.html")
	if err != nil {
		t.Fatal(err)
	}
	pageURL.User = url.UserPassword("browser", "pw-browser")
	b := startChromium(t, chromium, pageURL.String())
	page.browser = b
	page.waitFor(t, 2*stepTimeout, "Chromium to load the page", func(e event) bool { return e.Type == "started" })
	page.wait(t, "the EventSource to open", func(e event) bool { return e.Type == "open" })
	t.Logf("EventSource open in %s", b.version)

	const text = "Live: Grüße — ça va? 日本語 ✓ 🎉"
	const name = "Alice Łukasiewicz"
	mid := api.send("alice", map[string]any{"id": gid, "mb": text, "dn": name})
	got := page.wait(t, "alice's message on the page", func(e event) bool {
		return e.Type == "event" && e.MID == strconv.FormatUint(mid, 10)
	})
	if got.Kind != "MSG" || got.Body != text || got.Sender != "alice" || got.DisplayName != name || got.GID != fmt.Sprint(gid) {
		t.Errorf("event %+v, want alice's MSG %q in group %d", got, text, gid)
	}
	if want := name + ": " + text; got.Shown != want {
		t.Errorf("the page shows %q, want %q", got.Shown, want)
	}

	// The stream is cut; the browser reconnects by itself, saying where
	// it was, and gets what was posted meanwhile.
	mu.Lock()
	for _, cut := range cuts {
		cut()
	}
	mu.Unlock()
	page.wait(t, "the EventSource to notice the cut", func(e event) bool { return e.Type == "sseError" })
	missed := api.send("alice", map[string]any{"id": gid, "mb": "posted while the stream was cut"})
	page.wait(t, "the message posted during the cut", func(e event) bool {
		return e.Type == "event" && e.MID == strconv.FormatUint(missed, 10)
	})
	mu.Lock()
	seen := append([]streamRequest(nil), requests...)
	mu.Unlock()
	resumed := false
	for _, r := range seen[1:] {
		if r.lastEventID == strconv.FormatUint(mid, 10) {
			resumed = true
		}
	}
	if !resumed {
		t.Errorf("the browser's requests %+v: none resumed after %d", seen, mid)
	}
	if !seen[0].authorized {
		t.Logf("the first stream request came without credentials and was answered after gchd's challenge: %+v", seen)
	}
	count := 0
	for _, e := range page.all() {
		if e.Type == "event" && e.MID == strconv.FormatUint(mid, 10) {
			count++
		}
	}
	if count != 1 {
		t.Errorf("the first message was shown %d times", count)
	}
	t.Logf("stream requests through the proxy: %+v", seen)
}
