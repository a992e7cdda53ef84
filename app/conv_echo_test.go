package app

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	gsip "github.com/ghettovoice/gosip/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

// withMID returns the requests that carry X-GC-MID mid.
func withMID(reqs []*sip.Request, mid uint64) []*sip.Request {
	var out []*sip.Request
	for _, r := range reqs {
		if h := r.GetHeader("X-GC-MID"); h != nil && h.Value() == strconv.FormatUint(mid, 10) {
			out = append(out, r)
		}
	}
	return out
}

// waitMID waits until p has received the event mid and returns it.
func waitMID(t *testing.T, p *phone, mid uint64) *sip.Request {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if got := withMID(p.received(), mid); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s never received %d", p.login, p.transport, mid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// noneOf fails unless, after a pause for anything in flight, none of the
// phones received one of the events.
func noneOf(t *testing.T, phones []*phone, mids ...uint64) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	for _, p := range phones {
		for _, mid := range mids {
			if got := withMID(p.received(), mid); len(got) > 0 {
				t.Errorf("%s/%s received %d:\n%s", p.login, p.transport, mid, got[0])
			}
		}
	}
}

// noBody fails when the gosip phone has received body (it keeps bodies
// only).
func noBody(t *testing.T, p *gosipPhone, body string) {
	t.Helper()
	for {
		select {
		case got := <-p.got:
			if got == body {
				t.Errorf("the gosip phone of %s received %q", p.login, body)
			}
		default:
			return
		}
	}
}

// waitBody waits until the gosip phone receives body.
func waitBody(t *testing.T, p *gosipPhone, body string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case got := <-p.got:
			if got == body {
				return
			}
		case <-deadline:
			t.Fatalf("the gosip phone of %s never received %q", p.login, body)
		}
	}
}

// postSIP posts text to a group from a sipgo phone and returns the MID.
func postSIP(t *testing.T, p *phone, id uint32, text string) uint64 {
	t.Helper()
	res := p.message(fmt.Sprintf("gc-%d", id), text)
	if res.StatusCode != 202 || res.GetHeader("X-GC-MID") == nil {
		t.Fatalf("post from %s/%s: %s", p.login, p.transport, res.StartLine())
	}
	mid, _ := strconv.ParseUint(res.GetHeader("X-GC-MID").Value(), 10, 64)
	return mid
}

// postGosip posts text to a group from a gosip phone and returns the MID.
func postGosip(t *testing.T, s *server, p *gosipPhone, id uint32, text string) uint64 {
	t.Helper()
	res := p.request(t, gsip.MESSAGE, s.app.SIPAddr("UDP"), fmt.Sprintf("gc-%d", id), text)
	hs := res.GetHeaders("X-GC-MID")
	if res.StatusCode() != 202 || len(hs) == 0 {
		t.Fatalf("post from gosip: %s", res.StartLine())
	}
	mid, _ := strconv.ParseUint(hs[0].Value(), 10, 64)
	return mid
}

// echoSetup is a group of own and ann, both joined; ann has three devices
// (sipgo over UDP and TCP, gosip over UDP), own one. Their notifications
// have arrived.
type echoSetup struct {
	s                   *server
	id                  uint32
	own, annUDP, annTCP *phone
	annGosip            *gosipPhone
}

func newEchoSetup(t *testing.T, s *server) echoSetup {
	t.Helper()
	for _, l := range []string{"own", "ann"} {
		s.addAccount(l, "pw-"+l, "")
	}
	e := echoSetup{s: s, own: newPhone(t, s, "own", "UDP"), annUDP: newPhone(t, s, "ann", "UDP"), annTCP: newPhone(t, s, "ann", "TCP"),
		annGosip: newGosipPhone(t, "ann", "udp")}
	for _, p := range []*phone{e.own, e.annUDP, e.annTCP} {
		p.register()
	}
	if res := e.annGosip.request(t, gsip.REGISTER, s.app.SIPAddr("UDP"), "", ""); res.StatusCode() != 200 {
		t.Fatalf("REGISTER gosip: %s", res.StartLine())
	}
	e.id = groupOf(t, s, "own", "ann")
	s.must("ann", "joinGroup", map[string]any{"id": e.id})
	// NG and EG reach every device.
	for _, p := range []*phone{e.own, e.annUDP, e.annTCP} {
		p.waitFor(2)
	}
	for i := 0; i < 2; i++ {
		select {
		case <-e.annGosip.got:
		case <-time.After(10 * time.Second):
			t.Fatal("the gosip phone never received NG and EG")
		}
	}
	return e
}

// deliveriesAdded runs fn and returns how many delivery rows it added.
func deliveriesAdded(s *server, fn func()) int {
	before := s.rowCounts()["deliveries"]
	fn()
	return s.rowCounts()["deliveries"] - before
}

// A member's own group text comes back to none of her devices by default:
// posted over HTTP, over SIP from a sipgo phone and from a gosip phone, the
// other member gets it and none of hers does, and no delivery is recorded
// for her.
func TestOwnMessagesNotEchoed(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		e := newEchoSetup(t, s)
		annPhones := []*phone{e.annUDP, e.annTCP}

		var mid uint64
		if n := deliveriesAdded(s, func() { mid = sendMID(t, s, "ann", map[string]any{"id": e.id, "mb": "over http"}) }); n != 1 {
			t.Errorf("a post over HTTP recorded %d deliveries, want 1 (own's)", n)
		}
		if got := waitMID(t, e.own, mid); got.GetHeader("X-GC-Copy") != nil || string(got.Body()) != "over http" {
			t.Errorf("own received:\n%s", got)
		}
		noneOf(t, annPhones, mid)
		noBody(t, e.annGosip, "over http")

		var mid2 uint64
		if n := deliveriesAdded(s, func() { mid2 = postSIP(t, e.annUDP, e.id, "over sip") }); n != 1 {
			t.Errorf("a post over SIP recorded %d deliveries, want 1", n)
		}
		waitMID(t, e.own, mid2)
		mid3 := postGosip(t, s, e.annGosip, e.id, "over gosip")
		waitMID(t, e.own, mid3)
		noneOf(t, annPhones, mid2, mid3)
		noBody(t, e.annGosip, "over sip")
		noBody(t, e.annGosip, "over gosip")
	})
}

// A sender without a device leaves nothing pending for herself: the
// pending-delivery gauge stays at zero, and no delivery row names her.
func TestNoPendingSelfDelivery(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		for _, l := range []string{"own", "solo"} {
			s.addAccount(l, "pw-"+l, "")
		}
		own, solo := newPhone(t, s, "own", "UDP"), newPhone(t, s, "solo", "TCP")
		own.register()
		solo.register()
		id := groupOf(t, s, "own", "solo")
		s.must("solo", "joinGroup", map[string]any{"id": id})
		solo.waitFor(2)
		// solo's phone goes away: what is due to her from now on waits.
		if res := solo.send(solo.registerRequest(0)); res.StatusCode != 200 {
			t.Fatalf("unregister: %s", res.StartLine())
		}
		pending := func() float64 { return value(t, s, "gchd_delivery_pending", nil) }
		eventually(t, func() bool { return pending() == 0 })

		mid := sendMID(t, s, "solo", map[string]any{"id": id, "mb": "nobody home"})
		waitMID(t, own, mid)
		// own's delivery is settled once its 200 is written; then
		// nothing is left pending, and it stays so.
		eventually(t, func() bool { return pending() == 0 })
		for i := 0; i < 10; i++ {
			if got := pending(); got != 0 {
				t.Fatalf("pending deliveries = %v after solo's own post, want 0", got)
			}
			time.Sleep(30 * time.Millisecond)
		}
		ps, err := s.app.db.DeliveryStore().PendingFor(context.Background(), "solo", 0, 10)
		if err != nil || len(ps) != 0 {
			t.Fatalf("pending for solo: %+v, %v", ps, err)
		}
	})
}

// With delivery.copy_to_sender on, the sender's other devices get a copy
// marked X-GC-Copy: sent: all of them for a post over HTTP, all but the
// posting one over SIP. Copies are never stored: a device that registers
// later gets none, and none is recorded or pending.
func TestCopiesToSender(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine, func(c *configs.Config) { c.Delivery.CopyToSender = true })
		e := newEchoSetup(t, s)
		gid := fmt.Sprint(e.id)
		isCopy := func(p *phone, r *sip.Request, text string) {
			t.Helper()
			n := notificationsOf([]*sip.Request{r})[0]
			if h := r.GetHeader("X-GC-Copy"); h == nil || h.Value() != "sent" || n.body != text || n.from != "gc-"+gid ||
				n.xf != "ann" || n.gid != gid || r.To().Address.User != "ann" {
				t.Errorf("%s/%s: not a marked copy of %q:\n%s", p.login, p.transport, text, r)
			}
		}
		notCopy := func(r *sip.Request) {
			t.Helper()
			if r.GetHeader("X-GC-Copy") != nil {
				t.Errorf("own's delivery is marked as a copy:\n%s", r)
			}
		}

		var mid uint64
		if n := deliveriesAdded(s, func() { mid = sendMID(t, s, "ann", map[string]any{"id": e.id, "mb": "over http"}) }); n != 1 {
			t.Errorf("a post over HTTP recorded %d deliveries, want 1 (own's)", n)
		}
		notCopy(waitMID(t, e.own, mid))
		for _, p := range []*phone{e.annUDP, e.annTCP} {
			isCopy(p, waitMID(t, p, mid), "over http")
		}
		waitBody(t, e.annGosip, "over http")

		// Over SIP the posting device is skipped, by its flow.
		mid2 := postSIP(t, e.annUDP, e.id, "over sip")
		notCopy(waitMID(t, e.own, mid2))
		isCopy(e.annTCP, waitMID(t, e.annTCP, mid2), "over sip")
		waitBody(t, e.annGosip, "over sip")
		mid3 := postGosip(t, s, e.annGosip, e.id, "over gosip")
		for _, p := range []*phone{e.annUDP, e.annTCP} {
			isCopy(p, waitMID(t, p, mid3), "over gosip")
		}
		noneOf(t, []*phone{e.annUDP}, mid2)
		noBody(t, e.annGosip, "over gosip")
		for p, mids := range map[*phone][]uint64{e.annUDP: {mid, mid3}, e.annTCP: {mid, mid2, mid3}} {
			for _, m := range mids {
				if n := len(withMID(p.received(), m)); n != 1 {
					t.Errorf("%s/%s received %d copies of %d, want 1", p.login, p.transport, n, m)
				}
			}
		}

		// Nothing was kept: a device registered now gets no copy.
		late := newPhone(t, s, "ann", "TCP")
		late.register()
		noneOf(t, []*phone{late}, mid, mid2, mid3)
		eventually(t, func() bool { return value(t, s, "gchd_delivery_pending", nil) == 0 })
	})
}
