package ingress

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

func TestAnsweredExpires(t *testing.T) {
	a := newAnswered(time.Second)
	t0 := time.Unix(1000, 0)
	for i := 0; i < 3000; i++ {
		a.put(fmt.Sprint(i), answer{data: []byte{byte(i)}}, t0.Add(time.Duration(i)*time.Millisecond))
	}
	now := t0.Add(3500 * time.Millisecond)
	if _, ok := a.get("2500", now); ok {
		t.Fatal("an answer as old as the ttl is still kept")
	}
	if b, ok := a.get("2501", now); !ok || b.data[0] != byte(2501%256) {
		t.Fatal("an answer within the ttl is gone")
	}
	if n := a.len(); n != 499 {
		t.Fatalf("%d answers kept, want 499 (2501 to 2999)", n)
	}
	// Once everything expired the order slice is reused, not grown.
	a.get("x", t0.Add(time.Hour))
	if a.len() != 0 || len(a.order)-a.head != 0 || a.head > 1024 {
		t.Fatalf("after expiry: %d kept, order %d from %d", a.len(), len(a.order), a.head)
	}
}

func TestAnswerKey(t *testing.T) {
	req := func(method sip.RequestMethod, transport, branch string) *sip.Request {
		r := sip.NewRequest(method, sip.Uri{Host: "example.org"})
		params := sip.NewParams()
		params.Add("branch", branch)
		r.AppendHeader(&sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport, Host: "192.0.2.1", Port: 5060,
			Params: params})
		r.SetTransport(transport)
		r.SetSource("192.0.2.1:5060")
		return r
	}
	tests := []struct {
		r    *sip.Request
		want bool
	}{
		{req(sip.MESSAGE, "UDP", "z9hG4bK-1"), true},
		{req(sip.REGISTER, "UDP", "z9hG4bK-1"), true},
		{req(sip.INVITE, "UDP", "z9hG4bK-1"), false},
		{req(sip.ACK, "UDP", "z9hG4bK-1"), false},
		{req(sip.CANCEL, "UDP", "z9hG4bK-1"), false},
		{req(sip.MESSAGE, "TCP", "z9hG4bK-1"), false},
		{req(sip.MESSAGE, "UDP", "rfc2543-branch"), false},
	}
	for _, tt := range tests {
		if _, ok := answerKey(tt.r); ok != tt.want {
			t.Errorf("%s over %s, branch %s: kept %v, want %v", tt.r.Method, tt.r.Transport(), tt.r.Via().Params, ok, tt.want)
		}
	}
	k1, _ := answerKey(req(sip.MESSAGE, "UDP", "z9hG4bK-1"))
	k2, _ := answerKey(req(sip.REGISTER, "UDP", "z9hG4bK-1"))
	if k1 == k2 {
		t.Error("the method is not part of the key")
	}
}

// begin stands for a transaction: the first copy is marked in progress,
// a copy meanwhile is dropped, a copy after the answer gets it, and a mark
// forgotten (no answer) lets the next copy through.
func TestAnsweredBegin(t *testing.T) {
	a := newAnswered(time.Second)
	t0 := time.Unix(1000, 0)
	steps := []struct {
		do    func() int
		want  int
		about string
	}{
		{func() int { _, st := a.begin("k", t0); return st }, answerNone, "first copy"},
		{func() int { _, st := a.begin("k", t0); return st }, answerPending, "copy while in progress"},
		{func() int {
			if _, ok := a.get("k", t0); ok {
				return -1
			}
			return answerNone
		}, answerNone, "get does not return a mark"},
		{func() int { a.put("k", answer{data: []byte("200")}, t0); _, st := a.begin("k", t0); return st }, answerKept, "copy after the answer"},
		{func() int { _, st := a.begin("f", t0); a.forget("f"); _, st = a.begin("f", t0); return st }, answerNone, "copy after a forgotten mark"},
		{func() int { a.forget("k"); _, st := a.begin("k", t0); return st }, answerKept, "forget leaves an answer"},
		{func() int { _, st := a.begin("k", t0.Add(time.Second)); return st }, answerNone, "copy after the ttl"},
		{func() int {
			// f was entered at t0, forgotten, entered again at t0+0.5s:
			// its first entry must not expire the second.
			a.forget("f")
			a.begin("f", t0.Add(time.Second/2))
			_, st := a.begin("f", t0.Add(time.Second))
			return st
		}, answerPending, "a key entered again keeps its own expiry"},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Errorf("%s: state %d, want %d", s.about, got, s.want)
		}
	}
}

func TestAnsweredExpireWithoutAccess(t *testing.T) {
	a := newAnswered(time.Second)
	t0 := time.Unix(1000, 0)
	a.put("k", answer{data: []byte("200")}, t0)
	a.begin("m", t0)
	a.expire(t0.Add(time.Second))
	if n := a.len(); n != 0 {
		t.Fatalf("%d answers kept after the ttl", n)
	}
}

// Answers live in shared chunks: each reads back whole with its address
// after many others were kept, an answer larger than a chunk too, and the
// chunks go once their answers expired.
func TestAnsweredChunks(t *testing.T) {
	a := newAnswered(time.Second)
	t0 := time.Unix(1000, 0)
	addrs := []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:5060"),
		netip.MustParseAddrPort("[2001:db8::1]:5062"),
		netip.MustParseAddrPort("[fe80::1%eth0]:5060"),
	}
	body := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, 300+i%700) }
	const n = 3000 // about 2 MB: several chunks
	for i := range n {
		a.put(fmt.Sprint(i), answer{data: body(i), to: addrs[i%len(addrs)]}, t0.Add(time.Duration(i)*time.Microsecond))
	}
	big := bytes.Repeat([]byte("x"), answerChunkSize+1)
	a.put("big", answer{data: big, to: addrs[0]}, t0)
	if len(a.store.chunks) < 4 {
		t.Fatalf("%d chunks for %d answers", len(a.store.chunks), n)
	}
	for _, i := range []int{0, 1, 699, 1500, n - 1} {
		ans, ok := a.get(fmt.Sprint(i), t0)
		if !ok || !bytes.Equal(ans.data, body(i)) || ans.to != addrs[i%len(addrs)] {
			t.Fatalf("answer %d: kept %v, %d bytes to %v", i, ok, len(ans.data), ans.to)
		}
	}
	if ans, ok := a.get("big", t0); !ok || !bytes.Equal(ans.data, big) {
		t.Fatalf("the answer larger than a chunk: kept %v, %d bytes", ok, len(ans.data))
	}
	// A kept answer is a copy: the caller may hold it past the chunk.
	ans, _ := a.get("7", t0)
	ans.data[0] = 0xff
	if again, _ := a.get("7", t0); again.data[0] != 7 {
		t.Fatal("get returned the chunk's bytes, not a copy")
	}
	a.expire(t0.Add(time.Second + n*time.Microsecond))
	if a.len() != 0 || len(a.store.chunks) != 0 {
		t.Fatalf("after the ttl: %d answers, %d chunks", a.len(), len(a.store.chunks))
	}
	// Chunk numbers go on: a new answer is not read through an old number.
	a.put("new", answer{data: []byte("new"), to: addrs[0]}, t0.Add(time.Hour))
	if ans, ok := a.get("new", t0.Add(time.Hour)); !ok || string(ans.data) != "new" {
		t.Fatalf("after the release: %q %v", ans.data, ok)
	}
	if a.store.base == 0 {
		t.Fatal("chunk numbers started again")
	}
}
