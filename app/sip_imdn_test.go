package app

import (
	"bytes"
	"compress/zlib"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/storage"
)

// linphoneIMDN is a disposition notification as linphonec 5.1 writes it
// (kind "delivery" or "display", status "delivered" or "displayed").
func linphoneIMDN(messageID, kind, status string) []byte {
	return fmt.Appendf(nil, `<?xml version="1.0" encoding="UTF-8" standalone="no" ?><imdn xmlns="urn:ietf:params:xml:ns:imdn"><message-id>%s</message-id><datetime>%s</datetime><%s-notification><status><%s/></status></%s-notification></imdn>`,
		messageID, time.Now().UTC().Format("2006-01-02T15:04:05Z"), kind, status, kind)
}

// imdnRequest is a MESSAGE carrying a notification to a user or group,
// deflated as Linphone sends it when deflate is set.
func imdnRequest(p *phone, to string, doc []byte, deflate bool) *sip.Request {
	req := p.messageRequest(to, "")
	req.ReplaceHeader(sip.NewHeader("Content-Type", "message/imdn+xml"))
	if deflate {
		var b bytes.Buffer
		w := zlib.NewWriter(&b)
		w.Write(doc)
		w.Close()
		doc = b.Bytes()
		req.AppendHeader(sip.NewHeader("Content-Encoding", "deflate"))
	}
	req.SetBody(doc)
	return req
}

// cpimIMDN wraps a notification in CPIM (RFC 3862), as Linphone does in
// chat rooms that use CPIM.
func cpimIMDN(p *phone, to string, doc []byte) *sip.Request {
	req := p.messageRequest(to, "")
	req.ReplaceHeader(sip.NewHeader("Content-Type", "message/cpim"))
	body := fmt.Sprintf("From: <sip:%s@%s>\r\nTo: <sip:%s@%s>\r\nNS: imdn <urn:ietf:params:imdn>\r\nimdn.Message-ID: 1a2b3c\r\nDateTime: 2026-01-01T00:00:00Z\r\n\r\nContent-Type: message/imdn+xml\r\nContent-Disposition: notification\r\nContent-Length: %d\r\n\r\n%s",
		p.login, testDomain, to, testDomain, len(doc), doc)
	req.SetBody([]byte(body))
	return req
}

type receipt struct{ L, CF, RD string }

// receiptOf is member's receipt of a message, as getMessageInfo shows it.
func receiptOf(t *testing.T, s *server, login string, id uint32, mid uint64, member string) receipt {
	t.Helper()
	var info []receipt
	s.must(login, "getMessageInfo", map[string]any{"id": id, "mid": mid}).json(t, &info)
	for _, r := range info {
		if r.L == member {
			return r
		}
	}
	t.Fatalf("getMessageInfo of %d has no %s: %+v", mid, member, info)
	return receipt{}
}

// deliveryOf waits for the delivery of mid to a phone and returns it.
func deliveryOf(t *testing.T, p *phone, mid uint64) *sip.Request {
	t.Helper()
	for n := 1; ; n++ {
		for _, r := range p.waitFor(n) {
			if h := r.GetHeader("X-GC-MID"); h != nil && h.Value() == strconv.FormatUint(mid, 10) {
				return r
			}
		}
	}
}

// Delivery and display notifications to a group's address are answered
// 200 and set the member's cf and rd for the MID the delivery's Call-ID
// names, deflated or not, bare or in CPIM; a notification that names
// nothing of the group's changes nothing; one that cannot be read is 400.
func TestGroupReceiptsOverSIP(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		for _, l := range []string{"own", "mem"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "mem")
		other := groupOf(t, s, "own", "mem")
		s.must("mem", "joinGroup", map[string]any{"id": id})
		// The phone refuses what it gets: the delivery sets no cf, so
		// the receipt is what sets it.
		mem := newPhone(t, s, "mem", "UDP", answering(500))
		mem.register()
		mid := sendMID(t, s, "own", map[string]any{"id": id, "mb": "first"})
		callID := deliveryOf(t, mem, mid).CallID().Value()
		gc := fmt.Sprintf("gc-%d", id)
		if r := receiptOf(t, s, "own", id, mid, "mem"); r.CF != "" {
			t.Fatalf("a refused delivery set cf: %+v", r)
		}
		notDeflated := imdnRequest(mem, gc, linphoneIMDN(callID, "display", "displayed"), false)
		notDeflated.AppendHeader(sip.NewHeader("Content-Encoding", "deflate"))
		for _, bad := range []*sip.Request{
			notDeflated,
			// 1 MB of XML-looking text deflates to about 1 KB: it is
			// not inflated beyond what a notification needs.
			imdnRequest(mem, gc, append(linphoneIMDN(callID, "display", "displayed"), bytes.Repeat([]byte(" "), 1<<20)...), true),
			imdnRequest(mem, gc, []byte("<imdn><message-id>"), false),
			imdnRequest(mem, gc, []byte(`<imdn xmlns="urn:ietf:params:xml:ns:imdn"></imdn>`), false),
		} {
			if res := mem.send(bad); res.StatusCode != 400 {
				t.Errorf("unreadable notification: %s", res.StartLine())
			}
		}
		// Names of nothing gchd delivered in this group: 200, no change.
		for _, name := range []string{"a1b2c3", fmt.Sprintf("gc-%d-%d-x@%s", other, mid, testDomain), fmt.Sprintf("gc-%d-999-x", id)} {
			if res := mem.send(imdnRequest(mem, gc, linphoneIMDN(name, "display", "displayed"), true)); res.StatusCode != 200 {
				t.Errorf("notification naming %s: %s", name, res.StartLine())
			}
		}
		if r := receiptOf(t, s, "own", id, mid, "mem"); r.CF != "" || r.RD != "" {
			t.Fatalf("a notification naming something else set a receipt: %+v", r)
		}
		if res := mem.send(imdnRequest(mem, gc, linphoneIMDN(callID, "delivery", "delivered"), true)); res.StatusCode != 200 {
			t.Fatalf("delivery notification: %s", res.StartLine())
		}
		if r := receiptOf(t, s, "own", id, mid, "mem"); r.CF == "" || r.RD != "" {
			t.Fatalf("after the delivery notification: %+v", r)
		}
		if res := mem.send(cpimIMDN(mem, gc, linphoneIMDN(callID, "display", "displayed"))); res.StatusCode != 200 {
			t.Fatalf("display notification in CPIM: %s", res.StartLine())
		}
		if r := receiptOf(t, s, "own", id, mid, "mem"); r.CF == "" || r.RD == "" {
			t.Fatalf("after the display notification: %+v", r)
		}
		// Nothing was posted to the group.
		if got := groupMessages(t, s, "own", id); len(got) != 1 {
			t.Fatalf("group history: %q", got)
		}
	})
}

// A notification to a user's address is relayed to the user's devices as
// any MESSAGE is, deflated body and all, and their 200 comes back.
func TestUserReceiptsRelayed(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"alice", "bob"} {
			s.addAccount(l, "pw-"+l, "")
		}
		bob := newPhone(t, s, "bob", "TCP")
		bob.register()
		alice := newPhone(t, s, "alice", "UDP")
		doc := linphoneIMDN("bob-call-id", "delivery", "delivered")
		if res := alice.send(imdnRequest(alice, "bob", doc, true)); res.StatusCode != 200 {
			t.Fatalf("notification to bob: %s", res.StartLine())
		}
		got := bob.waitFor(1)[0]
		if ct, ce := got.ContentType(), got.GetHeader("Content-Encoding"); ct == nil || ct.Value() != "message/imdn+xml" || ce == nil || ce.Value() != "deflate" {
			t.Fatalf("bob received %v %v", ct, ce)
		}
	})
}
