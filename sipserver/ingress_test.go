package sipserver

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
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
	s := &Server{udp: udp, answered: newAnswered(time.Minute), metrics: metrics.New(reg, metrics.BuildInfo{})}
	workers := newRegisterWorkers(s)
	workers.work = make(chan ingressJob, 1) // room for one
	in := newUDPIngress(s, udp, workers)
	parser := sip.NewParser()
	from := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5060}
	request := func(method, branch string) []byte {
		return []byte(method + " sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=" + branch +
			"\r\nFrom: <sip:ann@example.org>;tag=1\r\nTo: <sip:ann@example.org>\r\nCall-ID: c1\r\nCSeq: 1 " + method +
			"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
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
		if got := in.take(parser, tt.data, from); got != tt.taken || len(workers.work) != tt.queued {
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
	if !in.take(parser, request("REGISTER", "z9hG4bK-2"), from) || len(workers.work) != 1 {
		t.Error("the retransmission of a dropped REGISTER was not queued")
	}
}

// The readers take REGISTERs to the workers and hand everything else to
// sipgo's loop (ReadFrom); closing the socket ends them all and gives that
// loop the error.
func TestUDPIngressReaders(t *testing.T) {
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{udp: udp, answered: newAnswered(time.Minute), metrics: metrics.New(prometheus.NewRegistry(), metrics.BuildInfo{})}
	workers := newRegisterWorkers(s) // not started: what they get stays queued
	in := newUDPIngress(s, udp, workers)
	in.start(3)
	client, err := net.DialUDP("udp", nil, udp.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	const n = 50
	for i := range n {
		for _, method := range []string{"REGISTER", "OPTIONS"} {
			branch := fmt.Sprintf("z9hG4bK-%s-%d", method, i)
			client.Write([]byte(method + " sip:example.org SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=" + branch +
				"\r\nFrom: <sip:ann@example.org>;tag=1\r\nTo: <sip:ann@example.org>\r\nCall-ID: " + branch + "\r\nCSeq: 1 " + method +
				"\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"))
		}
	}
	buf := make([]byte, 65535)
	for i := range n {
		k, _, err := in.ReadFrom(buf)
		if err != nil || !strings.HasPrefix(string(buf[:k]), "OPTIONS ") {
			t.Fatalf("datagram %d for sipgo: %q, %v", i, buf[:min(k, 20)], err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(workers.work) < n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(workers.work) != n {
		t.Fatalf("%d REGISTERs queued, want %d", len(workers.work), n)
	}
	udp.Close()
	if _, _, err := in.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after close: %v, want net.ErrClosed", err)
	}
	if in.live.Load() != 0 {
		t.Fatalf("%d readers still running", in.live.Load())
	}
}
