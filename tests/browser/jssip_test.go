// Package browser runs a real third-party SIP user agent against gchd:
// JsSIP (testdata/jssip.min.js) in headless Chromium, registered over SIP
// over WebSocket, takes part in a group chat. The page (testdata/index.html)
// reports what it sees to a small HTTP server of the test and takes its
// commands from it by long polling; nothing else drives the browser.
//
// The test skips when Chromium is not installed (./test.sh installs it).
package browser

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"gchd/internal/testkit"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gchd/app"
	"gchd/configs"
	"gchd/storage"
)

const domain = testkit.Domain

// Each step waits at most this long; the whole test takes a few seconds.
const stepTimeout = 15 * time.Second

func TestJsSIPGroupChat(t *testing.T) {
	chromium := chromiumPath(t)
	g := startGCHD(t, map[string]string{"alice": "Alice", "browser": "Browser"})
	api := &apiClient{t: t, base: "http://" + g.app.HTTPAddr() + "/gch.ashx"}

	// alice makes a group and invites browser, who joins; the notifications
	// wait in gchd until the browser registers.
	var created struct{ ID uint32 }
	api.json("alice", "addGroup", map[string]any{"gs": "Browser", "gm": []map[string]string{{"l": "browser"}}}, &created)
	if created.ID == 0 {
		t.Fatal("addGroup returned no group id")
	}
	gid := created.ID
	groupURI := fmt.Sprintf("sip:gc-%d@%s", gid, domain)
	api.ok("browser", "joinGroup", map[string]any{"id": gid})

	page := startPage(t)
	wsURL := "ws://" + g.app.SIPAddr("WS")
	const browserName = "Brösel im Browser"
	q := url.Values{"ws": {wsURL}, "uri": {"sip:browser@" + domain}, "password": {"pw-browser"}, "name": {browserName}}
	if os.Getenv("GCHD_TEST_LOG") != "" {
		q.Set("debug", "1")
	}
	b := startChromium(t, chromium, page.url+"/index.html?"+q.Encode())
	page.browser = b

	// 1. The browser registers over WebSocket. JsSIP's Contact has a
	// made-up host (*.invalid), so gchd can reach it only over the flow
	// the REGISTER came on.
	started := page.waitFor(t, 2*stepTimeout, "Chromium to load the page and start JsSIP", func(e event) bool { return e.Type == "started" })
	t.Logf("JsSIP %s in %s", started.Version, b.version)
	reg := page.wait(t, "the browser to register", func(e event) bool { return e.Type == "registered" })
	if reg.Status != 200 {
		t.Fatalf("REGISTER answered %d, want 200", reg.Status)
	}
	contact := strings.ToLower(reg.Contact)
	if !strings.Contains(contact, ".invalid") || !strings.Contains(contact, "transport=ws") {
		t.Fatalf("JsSIP's contact %q is not a *.invalid WebSocket contact", reg.Contact)
	}
	if !containsFold(reg.Contacts, strings.TrimPrefix(contact, "sip:")) {
		t.Fatalf("200 OK to REGISTER does not list the browser's contact %q: %q", reg.Contact, reg.Contacts)
	}

	// The invitation, made while the browser was offline, reaches it once
	// it has registered.
	page.wait(t, "the queued invitation in the browser", func(e event) bool {
		return e.Type == "message" && strings.HasPrefix(e.Body, fmt.Sprintf("~[GC M:'NG' GID:%d MID:", gid)) &&
			strings.EqualFold(e.From, groupURI)
	})

	// 2. A message alice posts over the API arrives in the browser: exact
	// UTF-8 text, from the group's address with alice's display name, and
	// the MID the API returned.
	const aliceText = "Grüße aus Köln — ça va? 日本語のテキスト ✓ 🎉"
	const aliceName = "Alice Łukasiewicz-Ørsted"
	mid := api.send("alice", map[string]any{"id": gid, "mb": aliceText, "dn": aliceName})
	got := page.wait(t, "alice's message in the browser", func(e event) bool {
		return e.Type == "message" && e.MID == strconv.FormatUint(mid, 10)
	})
	if got.Body != aliceText {
		t.Errorf("browser got text %q, want %q", got.Body, aliceText)
	}
	if !strings.EqualFold(got.From, groupURI) {
		t.Errorf("message came from %q, want %q", got.From, groupURI)
	}
	if got.DisplayName != aliceName {
		t.Errorf("message shows sender %q, want %q", got.DisplayName, aliceName)
	}
	if got.GID != strconv.FormatUint(uint64(gid), 10) || got.Sender != "alice" {
		t.Errorf("X-GC-GID %q, X-GC-From %q; want %d, alice", got.GID, got.Sender, gid)
	}
	if !strings.HasPrefix(strings.ToLower(got.ContentType), "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", got.ContentType)
	}
	// JsSIP's 200 OK reached gchd: alice sees the message confirmed.
	eventually(t, "browser's receipt of alice's message", func() bool {
		var info []struct{ L, CF string }
		api.json("alice", "getMessageInfo", map[string]any{"id": gid, "mid": mid}, &info)
		for _, r := range info {
			if r.L == "browser" && r.CF != "" {
				return true
			}
		}
		return false
	})

	// 3. The browser posts to the group's address; gchd accepts (202) and
	// the message is in the group's history under the browser's login.
	const browserText = "Hallo aus dem Browser — naïve café, 中文, emoji 🚀"
	page.command(t, map[string]string{"op": "send", "to": groupURI, "text": browserText, "tag": "post"})
	sent := page.wait(t, "the browser's MESSAGE to be answered", func(e event) bool {
		return (e.Type == "sent" || e.Type == "sendFailed") && e.Tag == "post"
	})
	if sent.Type != "sent" || sent.Status != 202 {
		t.Fatalf("MESSAGE to %s: %s %d %s, want 202", groupURI, sent.Type, sent.Status, sent.Text)
	}
	postMID, err := strconv.ParseUint(sent.MID, 10, 64)
	if err != nil {
		t.Fatalf("202 to the browser's MESSAGE has X-GC-MID %q", sent.MID)
	}
	var hist struct {
		M []struct {
			MID uint64
			K   string
			L   string
			DN  string
			MB  string
		}
	}
	api.json("alice", "getMessages", map[string]any{"id": gid}, &hist)
	var posted bool
	for _, m := range hist.M {
		if m.K == "MSG" && m.L == "browser" && m.MB == browserText {
			posted = true
			if m.DN != browserName {
				t.Errorf("history shows the browser's post under name %q, want %q", m.DN, browserName)
			}
			if m.MID != postMID || m.MID <= mid {
				t.Errorf("browser's post has MID %d in the history; the 202 said %d, alice's was %d", m.MID, postMID, mid)
			}
		}
	}
	if !posted {
		t.Fatalf("the browser's post is not in the group's history: %+v", hist.M)
	}

	// The browser stops: it unregisters and closes its WebSocket.
	page.command(t, map[string]string{"op": "stop"})
	unreg := page.wait(t, "the browser to unregister", func(e event) bool { return e.Type == "unregistered" })
	if unreg.Status != 200 {
		t.Errorf("un-REGISTER answered %d, want 200", unreg.Status)
	}

	// Nothing the browser saw came back to it: a post is not echoed to the
	// device it came from.
	for _, e := range page.all() {
		if e.Type == "message" && e.Body == browserText {
			t.Errorf("the browser's own post was delivered back to it (MID %s)", e.MID)
		}
	}
}

// chromiumPath finds Chromium or skips the test.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("GCHD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (apt-get install chromium; ./test.sh installs it; or set GCHD_CHROMIUM)")
	return ""
}

// gchd is a running server.
type gchd struct {
	app *app.App
}

// startGCHD starts a server for test.local with SIP over WebSocket on a
// fresh SQLite database holding an account (password "pw-"+login) for each
// login, with its display name.
func startGCHD(t *testing.T, accounts map[string]string) *gchd {
	t.Helper()
	cfg := testkit.Config(t, storage.SQLite)
	// A browser meets gchd as deployed: the limits stay at their defaults.
	cfg.Limits = configs.Default().Limits
	cfg.SIP.WSAddr = "127.0.0.1:0"
	cfg.Registrar.Node = "browser-test"
	// Both digest algorithms are offered: JsSIP reads only the last
	// challenge, and gchd puts MD5 last over WebSocket.
	cfg.SIP.DigestAlgorithms = "MD5,SHA-256"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	testkit.AddNamedAccounts(t, cfg.Database, cfg.Domain, accounts)
	run := testkit.Start(t, func(ctx context.Context) (*app.App, error) { return app.New(ctx, cfg, testkit.Logger()) })
	return &gchd{app: run.Server}
}

// apiClient calls gchd's /gch.ashx as one of the test's users.
type apiClient struct {
	t    *testing.T
	base string
}

var httpClient = &http.Client{Timeout: stepTimeout}

// call posts gm and pm as login and returns the status, headers and body.
func (c *apiClient) call(login, gm string, pm any) (int, http.Header, []byte) {
	c.t.Helper()
	pmJSON, err := json.Marshal(pm)
	if err != nil {
		c.t.Fatal(err)
	}
	form := url.Values{"gm": {gm}, "pm": {string(pmJSON)}}
	req, err := http.NewRequest(http.MethodPost, c.base, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(login, "pw-"+login)
	res, err := httpClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s as %s: %v", gm, login, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatalf("%s as %s: read answer: %v", gm, login, err)
	}
	return res.StatusCode, res.Header, body
}

// ok calls a method that answers the result code 200.
func (c *apiClient) ok(login, gm string, pm any) http.Header {
	c.t.Helper()
	status, h, body := c.call(login, gm, pm)
	if status != http.StatusOK || strings.TrimSpace(string(body)) != "200" {
		c.t.Fatalf("%s as %s: %d %q, want 200", gm, login, status, body)
	}
	return h
}

// json calls a method that answers JSON and decodes it into v.
func (c *apiClient) json(login, gm string, pm, v any) {
	c.t.Helper()
	status, _, body := c.call(login, gm, pm)
	if status != http.StatusOK {
		c.t.Fatalf("%s as %s: %d %q", gm, login, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		c.t.Fatalf("%s as %s: %v in %q", gm, login, err, body)
	}
}

// send posts a group message and returns its MID from X-GC-MID.
func (c *apiClient) send(login string, pm any) uint64 {
	c.t.Helper()
	h := c.ok(login, "sendMessage", pm)
	mid, err := strconv.ParseUint(h.Get("X-GC-MID"), 10, 64)
	if err != nil || mid == 0 {
		c.t.Fatalf("sendMessage: X-GC-MID %q", h.Get("X-GC-MID"))
	}
	return mid
}

// eventually polls cond until it holds, for at most stepTimeout.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", stepTimeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// event is one report of the page.
type event struct {
	Type        string   `json:"type,omitempty"`
	Text        string   `json:"text,omitempty"`
	Version     string   `json:"version,omitempty"`
	Status      int      `json:"status,omitempty"`
	Contact     string   `json:"contact,omitempty"`
	Contacts    []string `json:"contacts,omitempty"`
	Tag         string   `json:"tag,omitempty"`
	From        string   `json:"from,omitempty"`
	DisplayName string   `json:"display_name,omitempty"`
	To          string   `json:"to,omitempty"`
	ContentType string   `json:"content_type,omitempty"`
	GID         string   `json:"gid,omitempty"`
	MID         string   `json:"mid,omitempty"`
	Sender      string   `json:"sender,omitempty"`
	Body        string   `json:"body,omitempty"`
	Kind        string   `json:"kind,omitempty"`  // of a live event (events.html)
	Shown       string   `json:"shown,omitempty"` // what the page shows for it
}

// page is the test's HTTP server: it serves testdata/ (and whatever routes
// a test adds), takes the page's reports on /report and hands it commands
// on /command.
type page struct {
	url      string
	changed  chan struct{} // a report came in
	commands chan []byte
	closing  chan struct{}
	browser  *browser

	mu  sync.Mutex
	log []event
}

func startPage(t *testing.T, routes ...func(*http.ServeMux)) *page {
	t.Helper()
	p := &page{changed: make(chan struct{}, 1), commands: make(chan []byte, 16), closing: make(chan struct{})}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServer(http.Dir("testdata")))
	for _, r := range routes {
		r(mux)
	}
	mux.HandleFunc("POST /report", func(w http.ResponseWriter, r *http.Request) {
		var e event
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&e); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		p.mu.Lock()
		p.log = append(p.log, e)
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default: // the waiter has a wake-up pending already
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /command", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		select {
		case c := <-p.commands:
			w.Header().Set("Content-Type", "application/json")
			w.Write(c)
		case <-time.After(5 * time.Second):
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		case <-p.closing:
			w.WriteHeader(http.StatusNoContent)
		}
	})
	srv := httptest.NewServer(mux)
	p.url = srv.URL
	t.Cleanup(func() {
		close(p.closing) // end the page's long poll, or Close waits for it
		srv.Close()
	})
	return p
}

// command queues a command for the page.
func (p *page) command(t *testing.T, c map[string]string) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case p.commands <- b:
	default:
		t.Fatal("command queue full")
	}
}

// all returns every report so far.
func (p *page) all() []event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]event(nil), p.log...)
}

// wait returns the first report that matches, failing the test at once on
// a page error, a failed registration or a browser that exited, and after
// stepTimeout (waitFor: after limit).
func (p *page) wait(t *testing.T, what string, match func(event) bool) event {
	t.Helper()
	return p.waitFor(t, stepTimeout, what, match)
}

func (p *page) waitFor(t *testing.T, limit time.Duration, what string, match func(event) bool) event {
	t.Helper()
	timeout := time.NewTimer(limit)
	defer timeout.Stop()
	var exited <-chan struct{}
	if p.browser != nil {
		exited = p.browser.exited
	}
	for {
		// Every report so far is searched, not only new ones: reports of
		// events close together may reach the test in either order.
		for _, e := range p.all() {
			if match(e) {
				return e
			}
			if e.Type == "error" || e.Type == "registrationFailed" {
				p.fail(t, fmt.Sprintf("waiting for %s: page reported %s: %d %s", what, e.Type, e.Status, e.Text))
			}
		}
		select {
		case <-p.changed:
		case <-exited:
			p.fail(t, fmt.Sprintf("waiting for %s: chromium exited", what))
		case <-timeout.C:
			p.fail(t, fmt.Sprintf("timed out after %v waiting for %s", limit, what))
		}
	}
}

// fail ends the test with what the page reported and Chromium printed.
func (p *page) fail(t *testing.T, msg string) {
	t.Helper()
	var b strings.Builder
	for _, e := range p.all() {
		j, _ := json.Marshal(e)
		fmt.Fprintf(&b, "  %s\n", j)
	}
	stderr := ""
	if p.browser != nil {
		stderr = p.browser.output()
	}
	t.Fatalf("%s\npage reports:\n%schromium output (tail):\n%s", msg, b.String(), stderr)
}

func containsFold(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(strings.ToLower(s), sub) {
			return true
		}
	}
	return false
}

// browser is a headless Chromium showing one page.
type browser struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	out     *tailBuffer
	version string
}

// startChromium opens pageURL in a headless Chromium with a fresh profile
// and stops it (the whole process group) when the test ends.
func startChromium(t *testing.T, path, pageURL string) *browser {
	t.Helper()
	vctx, vcancel := context.WithTimeout(context.Background(), 10*time.Second)
	version, _ := exec.CommandContext(vctx, path, "--version").Output()
	vcancel()

	// The profile and HOME (Chromium writes ~/.pki and caches there) are
	// removed after the browser is gone, not by t.TempDir, which would
	// race with Chromium's last writes.
	dir, err := os.MkdirTemp("", "gchd-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--disable-extensions", "--no-default-browser-check",
		"--mute-audio", "--enable-logging=stderr", "--v=0",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		pageURL,
	}
	cmd := exec.Command(path, args...)
	out := &tailBuffer{max: 64 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	if os.Getenv("GCHD_TEST_LOG") != "" {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(out, os.Stderr), io.MultiWriter(out, os.Stderr)
	}
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		t.Fatalf("start chromium: %v", err)
	}
	b := &browser{cmd: cmd, exited: make(chan struct{}), out: out, version: strings.TrimSpace(string(version))}
	go func() {
		cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(func() {
		stopProcessGroup(cmd, b.exited, 5*time.Second)
		select {
		case <-b.exited:
		case <-time.After(5 * time.Second):
			t.Errorf("chromium (pid %d) did not exit", cmd.Process.Pid)
		}
		os.RemoveAll(dir)
	})
	return b
}

// output is what Chromium printed, less its complaints about the missing
// D-Bus, which a headless browser in a container always has.
func (b *browser) output() string {
	var keep []string
	for _, line := range strings.Split(b.out.String(), "\n") {
		if !strings.Contains(line, ":dbus/") && !strings.Contains(line, "D-Bus") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if over := w.buf.Len() - w.max; over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
