package push

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateway is a push gateway that records what it is sent and answers
// with what the test decides.
type gateway struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []map[string]any
	answer func(n int) (status int, body string) // n: 1 for the first request
}

func newGateway(t *testing.T, answer func(n int) (int, string)) *gateway {
	g := &gateway{answer: answer}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var v map[string]any
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &v) != nil {
			t.Errorf("gateway got %s %s %q", r.Method, r.Header.Get("Content-Type"), b)
		}
		g.mu.Lock()
		g.bodies = append(g.bodies, v)
		n := len(g.bodies)
		g.mu.Unlock()
		status, body := 200, "{}"
		if g.answer != nil {
			status, body = g.answer(n)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *gateway) requests() []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]map[string]any(nil), g.bodies...)
}

type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) observe(outcome string) {
	o.mu.Lock()
	o.n[outcome]++
	o.mu.Unlock()
}

func (o *outcomes) get(outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[outcome]
}

// run starts a Notifier on g until the test ends.
func run(t *testing.T, g *gateway, opts Options) (*Notifier, *outcomes) {
	t.Helper()
	obs := &outcomes{n: map[string]int{}}
	opts.GatewayURL, opts.Observe = g.URL, obs.observe
	if opts.Backoff == nil {
		opts.Backoff = []time.Duration{10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	}
	p, err := New(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p, obs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var phone = Device{Provider: "apns", PRID: "00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0", Param: "ABCD1234.org.example.app.remote"}

func message(mid, text string) Notification {
	return Notification{Device: phone, Login: "bob", EventID: mid, Room: "sip:gc-7@example.com", Type: "MSG",
		Sender: "sip:alice@example.com", SenderDN: "Alice", Text: text}
}

// A push names the conversation, the sender and the MID, and carries the
// device as the gateway knows it; the text only when asked for, cut short.
func TestPayload(t *testing.T) {
	g := newGateway(t, nil)
	p, obs := run(t, g, Options{})
	if !p.Notify(message("42", "the secret plan")) {
		t.Fatal("Notify queued nothing")
	}
	eventually(t, "the push", func() bool { return obs.get(OutcomeSent) == 1 })
	got, _ := json.Marshal(g.requests()[0])
	want := `{"notification":{"counts":{"unread":1},"devices":[{"app_id":"apns","data":{"pn-param":"ABCD1234.org.example.app.remote"},` +
		`"pushkey":"00fc13adff785122b4ad28809a3420982341241421348097878e577c991de8f0"}],"event_id":"42","prio":"high",` +
		`"room_id":"sip:gc-7@example.com","sender":"sip:alice@example.com","sender_display_name":"Alice","type":"MSG"}}`
	if string(got) != want {
		t.Fatalf("push\n%s\nwant\n%s", got, want)
	}

	g2 := newGateway(t, nil)
	p2, obs2 := run(t, g2, Options{IncludeText: true})
	long := strings.Repeat("ż", 300)
	p2.Notify(message("43", long))
	p2.Notify(Notification{Device: Device{Provider: "fcm", PRID: "t2"}, EventID: "44", Room: "sip:gc-7@example.com", Type: "EG", Text: "setGroupSubject"})
	eventually(t, "two pushes", func() bool { return obs2.get(OutcomeSent) == 2 })
	for _, r := range g2.requests() {
		n := r["notification"].(map[string]any)
		switch n["event_id"] {
		case "43":
			if body := n["content"].(map[string]any)["body"].(string); body != strings.Repeat("ż", textLimit)+"…" {
				t.Errorf("text of %d characters sent as %q, want %d and a mark", len([]rune(long)), body, textLimit)
			}
		case "44":
			if _, ok := n["content"]; ok || n["prio"] != "low" {
				t.Errorf("a notification's push %v: want no text and low priority", n)
			}
			if d := n["devices"].([]any)[0].(map[string]any); len(d["data"].(map[string]any)) != 0 {
				t.Errorf("device without pn-param sent as %v", d)
			}
		}
	}
}

// A burst for one device sends one push in the coalescing window; another
// device is not held back; a device that registered again is pushed at
// once, with its count from zero.
func TestCoalescing(t *testing.T) {
	g := newGateway(t, nil)
	p, obs := run(t, g, Options{Coalesce: time.Minute})
	queued := 0
	for i := range 50 {
		if p.Notify(message(string(rune('a'+i%26)), "")) {
			queued++
		}
	}
	other := message("x", "")
	other.Device.PRID = "another"
	p.Notify(other)
	eventually(t, "two pushes", func() bool { return obs.get(OutcomeSent) == 2 })
	if queued != 1 || obs.get(OutcomeCoalesced) != 49 {
		t.Fatalf("50 notifications for one device queued %d pushes, coalesced %d; want 1 and 49", queued, obs.get(OutcomeCoalesced))
	}
	p.Forget(phone)
	if !p.Notify(message("y", "")) {
		t.Fatal("a device that registered again was not pushed at once")
	}
	eventually(t, "the third push", func() bool { return obs.get(OutcomeSent) == 3 })
	time.Sleep(50 * time.Millisecond)
	reqs := g.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	if c := reqs[2]["notification"].(map[string]any)["counts"].(map[string]any)["unread"]; c != 1.0 {
		t.Errorf("unread after registering again = %v, want 1", c)
	}
}

// 5xx, 429 and timeouts are retried with backoff, up to the retries
// configured; other answers and redirects are not, and a redirect is not
// followed.
func TestRetries(t *testing.T) {
	t.Run("5xx then 2xx", func(t *testing.T) {
		g := newGateway(t, func(n int) (int, string) {
			if n <= 2 {
				return []int{503, 429}[n-1], ""
			}
			return 200, "{}"
		})
		p, obs := run(t, g, Options{})
		p.Notify(message("1", ""))
		eventually(t, "the push", func() bool { return obs.get(OutcomeSent) == 1 })
		if n, r := len(g.requests()), obs.get(OutcomeRetried); n != 3 || r != 2 {
			t.Fatalf("%d requests, %d retried; want 3 and 2", n, r)
		}
	})
	t.Run("always 5xx", func(t *testing.T) {
		g := newGateway(t, func(int) (int, string) { return 500, "" })
		p, obs := run(t, g, Options{})
		start := time.Now()
		p.Notify(message("1", ""))
		eventually(t, "giving up", func() bool { return obs.get(OutcomeFailed) == 1 })
		if n := len(g.requests()); n != 4 || obs.get(OutcomeRetried) != 3 {
			t.Fatalf("%d requests, %d retried: want 4 and 3", n, obs.get(OutcomeRetried))
		}
		if time.Since(start) < 30*time.Millisecond {
			t.Fatalf("gave up after %v: the backoff was not waited", time.Since(start))
		}
	})
	t.Run("timeout", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		g := newGateway(t, func(n int) (int, string) {
			if n == 1 {
				<-release
			}
			return 200, "{}"
		})
		p, obs := run(t, g, Options{Timeout: 100 * time.Millisecond})
		p.Notify(message("1", ""))
		eventually(t, "the push", func() bool { return obs.get(OutcomeSent) == 1 })
		if obs.get(OutcomeRetried) != 1 {
			t.Fatalf("retried %d, want 1", obs.get(OutcomeRetried))
		}
	})
	t.Run("4xx", func(t *testing.T) {
		g := newGateway(t, func(int) (int, string) { return 400, "" })
		p, obs := run(t, g, Options{})
		p.Notify(message("1", ""))
		eventually(t, "giving up", func() bool { return obs.get(OutcomeFailed) == 1 })
		if n := len(g.requests()); n != 1 {
			t.Fatalf("%d requests, want 1", n)
		}
	})
	t.Run("redirect", func(t *testing.T) {
		elsewhere := newGateway(t, nil)
		g := newGateway(t, nil)
		g.Config.Handler = http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect)
		p, obs := run(t, g, Options{})
		p.Notify(message("1", ""))
		eventually(t, "giving up", func() bool { return obs.get(OutcomeFailed) == 1 })
		if n := len(elsewhere.requests()); n != 0 {
			t.Fatalf("the redirect was followed: %d requests elsewhere", n)
		}
	})
}

// A device whose pushkey the gateway rejected gets no more pushes until it
// registers again.
func TestRejectedPushkey(t *testing.T) {
	g := newGateway(t, func(int) (int, string) { return 200, `{"rejected":["` + phone.PRID + `"]}` })
	p, obs := run(t, g, Options{Coalesce: time.Millisecond})
	p.Notify(message("1", ""))
	eventually(t, "the rejection", func() bool { return obs.get(OutcomeRejected) == 1 })
	time.Sleep(5 * time.Millisecond)
	if p.Notify(message("2", "")) {
		t.Fatal("pushed a rejected pushkey again")
	}
	p.Forget(phone)
	if !p.Notify(message("3", "")) {
		t.Fatal("a device that registered again was not pushed")
	}
	eventually(t, "the second request", func() bool { return len(g.requests()) == 2 })
}

// The queue is bounded: beyond it pushes are dropped, counted, and Notify
// never blocks.
func TestQueueFull(t *testing.T) {
	g := newGateway(t, nil)
	obs := &outcomes{n: map[string]int{}}
	p, err := New(Options{GatewayURL: g.URL, Queue: 2, Observe: obs.observe}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i, prid := range []string{"a", "b", "c"} {
		n := message("1", "")
		n.Device.PRID = prid
		if queued := p.Notify(n); queued != (i < 2) {
			t.Fatalf("push %d queued: %v", i, queued)
		}
	}
	if obs.get(OutcomeDropped) != 1 {
		t.Fatalf("dropped %d, want 1", obs.get(OutcomeDropped))
	}
	// A dropped push does not count as one within the window.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	eventually(t, "the queued pushes", func() bool { return obs.get(OutcomeSent) == 2 })
	n := message("2", "")
	n.Device.PRID = "c"
	if !p.Notify(n) {
		t.Fatal("the device whose push was dropped is held back by the window")
	}
	eventually(t, "the third push", func() bool { return obs.get(OutcomeSent) == 3 })
	cancel()
	<-done
}

// Stopping cuts short a request that hangs.
func TestRunStops(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	g := newGateway(t, func(int) (int, string) { <-release; return 200, "" })
	p, err := New(Options{GatewayURL: g.URL, Timeout: time.Minute}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	p.Notify(message("1", ""))
	eventually(t, "the request", func() bool { return len(g.requests()) == 1 })
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
}

func TestNewChecksURL(t *testing.T) {
	for _, u := range []string{"", "gateway:8080", "ftp://gw/push", "http://", "http://[::1"} {
		if _, err := New(Options{GatewayURL: u}, slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("New accepted %q", u)
		}
	}
}
