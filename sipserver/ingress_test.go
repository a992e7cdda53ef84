package sipserver

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"gchd/metrics"
)

func TestIngressTake(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	reg := prometheus.NewRegistry()
	s := &Server{Stack: &Stack{udp: udp, metrics: metrics.New(reg, metrics.BuildInfo{})}, answered: newAnswered(time.Minute)}
	workers := newRegisterWorkers(s)
	workers.work = make(chan ingressJob, 1) // room for one
	in := newUDPIngress(s, udp, workers)
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5060}
	// With credentials: a REGISTER without is answered (challenged) at once.
	const credentials = `Authorization: Digest username="ann", realm="example.org", nonce="n", uri="sip:example.org", response="r"` + "\r\n"
	request := func(method, branch string) []byte {
		return []byte(method + " sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=" + branch +
			"\r\nFrom: <sip:ann@example.org>;tag=1\r\nTo: <sip:ann@example.org>\r\nCall-ID: c1\r\nCSeq: 1 " + method +
			"\r\nMax-Forwards: 70\r\n" + credentials + "Content-Length: 0\r\n\r\n")
	}
	tests := []struct {
		name   string
		data   []byte
		taken  bool
		queued int
	}{
		{"a REGISTER is queued", request("REGISTER", "z9hG4bK-1"), true, 1},
		{"its copy in progress is dropped", request("REGISTER", "z9hG4bK-1"), true, 1},
		{"another over a full queue is dropped", request("REGISTER", "z9hG4bK-2"), true, 1},
		{"an RFC 2543 REGISTER is left to sipgo", request("REGISTER", "old-1"), false, 1},
		{"other methods are left to sipgo", request("OPTIONS", "z9hG4bK-3"), false, 1},
		{"garbage is left to sipgo", []byte("REGISTER garbage"), false, 1},
	}
	for _, tt := range tests {
		if got := in.take(tt.data, from); got != tt.taken || len(workers.work) != tt.queued {
			t.Errorf("%s: taken %v with %d queued, want %v with %d", tt.name, got, len(workers.work), tt.taken, tt.queued)
		}
	}
	want := `
# HELP gchd_sip_requests_dropped_total SIP requests dropped unanswered, by method and reason (overload: the REGISTER queue was full; the phone retransmits).
# TYPE gchd_sip_requests_dropped_total counter
gchd_sip_requests_dropped_total{method="REGISTER",reason="overload"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "gchd_sip_requests_dropped_total"); err != nil {
		t.Error(err)
	}
	// The dropped request was forgotten: its retransmission is queued once
	// there is room.
	<-workers.work
	if !in.take(request("REGISTER", "z9hG4bK-2"), from) || len(workers.work) != 1 {
		t.Error("the retransmission of a dropped REGISTER was not queued")
	}
}
