package app

import (
	"context"
	"encoding/json"
	"gchd/internal/testkit"
	"gchd/storage"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
)

// pushGateway plays the operator's push gateway: it records every push
// request and answers with the status the test decides.
type pushGateway struct {
	*httptest.Server
	mu     sync.Mutex
	got    []gatewayRequest
	status func(n int) int // n: 1 for the first request; nil: 200
}

type gatewayRequest struct {
	at   time.Time
	body pushBody
}

// pushBody is the documented request (docs/operations.md).
type pushBody struct {
	Notification struct {
		EventID           string `json:"event_id"`
		RoomID            string `json:"room_id"`
		Type              string `json:"type"`
		Sender            string `json:"sender"`
		SenderDisplayName string `json:"sender_display_name"`
		Prio              string `json:"prio"`
		Content           *struct {
			Body string `json:"body"`
		} `json:"content"`
		Counts struct {
			Unread int `json:"unread"`
		} `json:"counts"`
		Devices []struct {
			AppID   string            `json:"app_id"`
			PushKey string            `json:"pushkey"`
			Data    map[string]string `json:"data"`
		} `json:"devices"`
	} `json:"notification"`
}

func newPushGateway(t *testing.T) *pushGateway {
	g := &pushGateway{}
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var b pushBody
		if err := json.Unmarshal(raw, &b); err != nil || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("gateway got %s %s %q: %v", r.Method, r.Header.Get("Content-Type"), raw, err)
		}
		g.mu.Lock()
		g.got = append(g.got, gatewayRequest{at: time.Now(), body: b})
		n := len(g.got)
		status := g.status
		g.mu.Unlock()
		code := 200
		if status != nil {
			code = status(n)
		}
		w.WriteHeader(code)
		io.WriteString(w, "{}")
	}))
	t.Cleanup(g.Close)
	return g
}

func (g *pushGateway) requests() []gatewayRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got)
}

// The push parameters of the test's phone, as Linphone writes them for
// iOS: two tokens in one pn-prid.
const (
	testPNProvider = "apns"
	testPNPRID     = "6c5b6a4f0d1e2f3a4b5c6d7e8f90a1b2:remote&7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a:voip"
	testPNParam    = "ABCD1234.org.linphone.phone.remote&voip"
)

// withPush registers the phone with push parameters in its Contact URI.
func withPush(provider, prid, param string) phoneOption {
	return func(p *phone) {
		p.contact.UriParams = append(p.contact.UriParams, sip.HeaderKV{K: "pn-provider", V: provider}, sip.HeaderKV{K: "pn-prid", V: prid})
		if param != "" {
			p.contact.UriParams = append(p.contact.UriParams, sip.HeaderKV{K: "pn-param", V: param})
		}
	}
}

func startPush(t *testing.T, g *pushGateway, mutate ...func(*configs.Config)) *server {
	t.Helper()
	return startPushOn(t, storage.SQLite, g, mutate...)
}

// startPushOn is startPush on a database of the engine.
func startPushOn(t *testing.T, engine storage.Engine, g *pushGateway, mutate ...func(*configs.Config)) *server {
	t.Helper()
	return startEngine(t, engine, append([]func(*configs.Config){func(c *configs.Config) {
		c.Push.GatewayURL = g.URL + "/_matrix/push/v1/notify"
	}}, mutate...)...)
}

// waitDelivered waits until nothing is pending for login.
func waitDelivered(t *testing.T, s *server, login string) {
	t.Helper()
	eventually(t, func() bool {
		ps, err := s.app.db.DeliveryStore().PendingFor(context.Background(), login, 0, 10)
		return err == nil && len(ps) == 0
	})
}

// sleepingMember makes alice's group with bob, whose UDP phone registers
// with push, takes what is due to it and goes silent (closed, as a phone
// the OS put to sleep). It returns the group.
func sleepingMember(t *testing.T, s *server, push phoneOption) uint32 {
	t.Helper()
	s.addAccount("alice", "pw-alice", "Alice")
	s.addAccount("bob", "pw-bob", "Bob")
	id := groupOf(t, s, "alice", "bob")
	s.must("bob", "joinGroup", map[string]any{"id": id})
	bob := newPhone(t, s, "bob", "UDP", push)
	bob.register()
	waitDelivered(t, s, "bob")
	bob.close()
	return id
}

// A phone registers with push parameters over UDP and goes silent. A post
// makes exactly one push arrive within two seconds, naming the group, the
// sender and the MID and no text, while another member has the message at
// once; the phone registers again from a new port and receives the
// message, once.
func TestPushWakesSleepingPhone(t *testing.T) {
	g := newPushGateway(t)
	s := startPush(t, g)
	for _, l := range []string{"alice", "bob", "carol"} {
		s.addAccount(l, "pw-"+l, strings.ToUpper(l[:1])+l[1:])
	}
	id := groupOf(t, s, "alice", "bob", "carol")
	s.must("bob", "joinGroup", map[string]any{"id": id})
	s.must("carol", "joinGroup", map[string]any{"id": id})
	carol := newPhone(t, s, "carol", "UDP")
	carol.register()
	const device = "urn:uuid:3c9d2d5e-6f0a-4b1c-8d2e-7f3a4b5c6d7e"
	bob := newPhone(t, s, "bob", "UDP", withInstance(device), withPush(testPNProvider, testPNPRID, testPNParam))
	res := bob.register()
	if fc := res.GetHeader("Feature-Caps"); fc == nil || fc.Value() != `*;+sip.pns="apns"` {
		t.Errorf("200 Feature-Caps = %v, want *;+sip.pns=\"apns\"", fc)
	}
	if c := res.GetHeader("Contact"); c == nil || !strings.Contains(c.Value(), "pn-prid="+testPNPRID) || !strings.Contains(c.Value(), "pn-param="+testPNParam) {
		t.Errorf("200 Contact %v does not list the push parameters back", c)
	}
	waitDelivered(t, s, "bob")
	waitDelivered(t, s, "carol")
	if n := len(g.requests()); n != 0 {
		t.Fatalf("%d pushes to an awake phone", n)
	}

	bob.close()
	posted := time.Now()
	mid := sendMID(t, s, "alice", map[string]any{"id": id, "mb": "lunch at 12:30?"})
	eventually(t, func() bool { return len(g.requests()) >= 1 })
	push := g.requests()[0]
	took := push.at.Sub(posted)
	t.Logf("the push arrived %v after the post", took)
	if took > 2*time.Second {
		t.Errorf("the push arrived %v after the post, want within 2s", took)
	}
	if got := withMID(carol.received(), mid); len(got) != 1 {
		t.Errorf("carol, awake, received the message %d times by the time of bob's push, want once", len(got))
	}
	n := push.body.Notification
	if n.EventID != strconv.FormatUint(mid, 10) || n.RoomID != "sip:gc-"+strconv.Itoa(int(id))+"@"+testDomain || n.Type != "MSG" ||
		n.SenderDisplayName != "Alice" || n.Sender != "sip:alice@"+testDomain || n.Prio != "high" || n.Counts.Unread != 1 {
		t.Errorf("push %+v", n)
	}
	if n.Content != nil {
		t.Errorf("the push carries the text %q with push.include_text off", n.Content.Body)
	}
	if len(n.Devices) != 1 || n.Devices[0].AppID != testPNProvider || n.Devices[0].PushKey != testPNPRID || n.Devices[0].Data["pn-param"] != testPNParam {
		t.Errorf("push devices %+v", n.Devices)
	}
	time.Sleep(1500 * time.Millisecond)
	if got := len(g.requests()); got != 1 {
		t.Fatalf("%d pushes for one message, want 1", got)
	}

	woken := newPhone(t, s, "bob", "UDP", withInstance(device), withPush(testPNProvider, testPNPRID, testPNParam))
	woken.register()
	got := woken.waitFor(1)
	if len(withMID(got, mid)) != 1 || string(got[0].Body()) != "lunch at 12:30?" {
		t.Fatalf("after registering again bob received %q", bodies(got))
	}
	waitDelivered(t, s, "bob")
	time.Sleep(time.Second)
	if got := woken.received(); len(got) != 1 {
		t.Errorf("bob received %q, want the message once", bodies(got))
	}
	if got := len(g.requests()); got != 1 {
		t.Errorf("%d pushes, want 1", got)
	}
	if v, _ := metricValue(t, s, `gchd_push_requests_total{outcome="sent"}`); v != 1 {
		t.Errorf(`gchd_push_requests_total{outcome="sent"} = %v, want 1`, v)
	}
}

// A burst of 50 posts for a sleeping phone, known by its pn-prid alone,
// sends one push; registering again from a new port brings all 50, in
// order, once each. A phone that unregisters gets no more pushes.
func TestPushBurstAndUnregister(t *testing.T) {
	g := newPushGateway(t)
	s := startPush(t, g)
	id := sleepingMember(t, s, withPush("fcm", "fcm-token-1", ""))

	var mids []uint64
	for i := range 50 {
		mids = append(mids, sendMID(t, s, "alice", map[string]any{"id": id, "mb": "burst " + strconv.Itoa(i)}))
	}
	eventually(t, func() bool {
		v, _ := metricValue(t, s, `gchd_push_requests_total{outcome="coalesced"}`)
		return v >= 49
	})
	time.Sleep(500 * time.Millisecond)
	reqs := g.requests()
	if len(reqs) != 1 {
		t.Fatalf("50 posts for a sleeping phone sent %d pushes, want 1", len(reqs))
	}
	if d := reqs[0].body.Notification.Devices; len(d) != 1 || d[0].AppID != "fcm" || d[0].PushKey != "fcm-token-1" || len(d[0].Data) != 0 {
		t.Errorf("push devices %+v", d)
	}

	woken := newPhone(t, s, "bob", "UDP", withPush("fcm", "fcm-token-1", ""))
	woken.register()
	woken.waitFor(len(mids))
	waitDelivered(t, s, "bob")
	time.Sleep(500 * time.Millisecond)
	var got []uint64
	for _, n := range notificationsOf(woken.received()) {
		got = append(got, n.mid)
	}
	if !slices.Equal(got, mids) {
		t.Fatalf("after registering again bob received MIDs %v, want %v once each, in order", got, mids)
	}
	if bs, _ := s.app.db.ListBindings(context.Background(), "bob", time.Now()); len(bs) != 1 || bs[0].Source != woken.sip.Conn.LocalAddr().String() {
		t.Errorf("bob's bindings %+v, want the one from the new port", bs)
	}

	if res := woken.send(woken.registerRequest(0)); res.StatusCode != 200 {
		t.Fatalf("unregister: %s", res.StartLine())
	}
	woken.close()
	sendMID(t, s, "alice", map[string]any{"id": id, "mb": "after unregister"})
	time.Sleep(2500 * time.Millisecond)
	if n := len(g.requests()); n != 1 {
		t.Fatalf("%d pushes after the phone unregistered, want none more", n-1)
	}
}

// A gateway that answers 5xx is tried again with backoff, and each outcome
// is counted.
func TestPushGatewayRetried(t *testing.T) {
	g := newPushGateway(t)
	g.status = func(n int) int {
		if n <= 2 {
			return 503
		}
		return 200
	}
	s := startPush(t, g)
	id := sleepingMember(t, s, withPush("apns", "token-2", "TEAM.org.example.app"))
	sendMID(t, s, "alice", map[string]any{"id": id, "mb": "are you there?"})
	eventually(t, func() bool { return metricAtLeast(t, s, `gchd_push_requests_total{outcome="sent"}`, 1) })
	reqs := g.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests to the gateway, want 3 (two 503s, then the push)", len(reqs))
	}
	if gap := reqs[2].at.Sub(reqs[1].at); gap < 800*time.Millisecond {
		t.Errorf("second retry %v after the first, want the 1s backoff", gap)
	}
	if v, _ := metricValue(t, s, `gchd_push_requests_total{outcome="retried"}`); v != 2 {
		t.Errorf(`gchd_push_requests_total{outcome="retried"} = %v, want 2`, v)
	}
	if v, ok := metricValue(t, s, `gchd_push_requests_total{outcome="failed"}`); !ok || v != 0 {
		t.Errorf(`gchd_push_requests_total{outcome="failed"} = %v (listed: %v), want 0`, v, ok)
	}
}

// Incomplete or malformed push parameters get 400 with a reason; a
// pn-provider alone asks what the server supports and registers without
// pushes; with no gateway the parameters are kept but not answered for.
func TestPushParameters(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		g := newPushGateway(t)
		s := startPushOn(t, engine, g)
		s.addAccount("bob", "pw-bob", "Bob")
		for _, c := range []struct {
			name   string
			uri    sip.HeaderParams // of the Contact URI
			header sip.HeaderParams // of the Contact
			reason string
		}{
			{"pn-prid without pn-provider", sip.HeaderParams{{K: "pn-prid", V: "token"}}, nil, "Push Parameters Without pn-provider"},
			{"empty pn-prid", sip.HeaderParams{{K: "pn-provider", V: "apns"}, {K: "pn-prid", V: ""}}, nil, "Invalid pn-prid"},
			{"empty pn-provider", sip.HeaderParams{{K: "pn-provider", V: ""}, {K: "pn-prid", V: "token"}}, nil, "Invalid pn-provider"},
			{"space in pn-prid", nil, sip.HeaderParams{{K: "pn-provider", V: "fcm"}, {K: "pn-prid", V: `"a b"`}}, "Invalid pn-prid"},
			{"pn-prid too long", sip.HeaderParams{{K: "pn-provider", V: "fcm"}, {K: "pn-prid", V: strings.Repeat("a", 1025)}}, nil, "Invalid pn-prid"},
			{"quote in pn-param", nil, sip.HeaderParams{{K: "pn-provider", V: "fcm"}, {K: "pn-prid", V: "t"}, {K: "pn-param", V: `"a\"b"`}}, "Invalid pn-param"},
		} {
			t.Run(c.name, func(t *testing.T) {
				p := newPhone(t, s, "bob", "UDP")
				p.contact.UriParams = c.uri
				req := p.registerRequest(300)
				if c.header != nil {
					req.Contact().Params = c.header
				}
				res := p.send(req)
				if res.StatusCode != 400 || res.Reason != c.reason {
					t.Fatalf("REGISTER answered %s, want 400 %s", res.StartLine(), c.reason)
				}
			})
		}
		if bs, _ := s.app.db.ListBindings(context.Background(), "bob", time.Now()); len(bs) != 0 {
			t.Fatalf("refused registrations left bindings: %+v", bs)
		}

		// Given as the Contact's own parameters, they are kept and listed
		// back there.
		p := newPhone(t, s, "bob", "UDP")
		req := p.registerRequest(300)
		req.Contact().Params = sip.HeaderParams{{K: "pn-provider", V: "fcm"}, {K: "pn-prid", V: "token-3"}}
		res := p.send(req)
		if c := res.GetHeader("Contact"); res.StatusCode != 200 || c == nil || !strings.Contains(c.Value(), ";pn-provider=fcm;pn-prid=token-3") {
			t.Fatalf("REGISTER with header parameters: %s, Contact %v", res.StartLine(), c)
		}
		if bs, _ := s.app.db.ListBindings(context.Background(), "bob", time.Now()); len(bs) != 1 || bs[0].Push.PRID != "token-3" {
			t.Fatalf("stored %+v", bs)
		}

		// A query: pn-provider alone.
		q := newPhone(t, s, "bob", "UDP")
		q.contact.UriParams = sip.HeaderParams{{K: "pn-provider", V: "apns"}}
		res = q.send(q.registerRequest(300))
		if fc := res.GetHeader("Feature-Caps"); res.StatusCode != 200 || fc == nil || fc.Value() != `*;+sip.pns="apns"` {
			t.Fatalf("query REGISTER: %s, Feature-Caps %v", res.StartLine(), fc)
		}

		// Without a gateway nothing is promised.
		off := startEngine(t, engine)
		off.addAccount("bob", "pw-bob", "Bob")
		p2 := newPhone(t, off, "bob", "UDP", withPush("apns", "token-4", ""))
		if res := p2.register(); res.GetHeader("Feature-Caps") != nil {
			t.Errorf("Feature-Caps without a push gateway: %v", res.GetHeader("Feature-Caps"))
		}
	})
}
