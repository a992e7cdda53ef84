package app

import (
	"net"
	"net/http"
	"testing"
	"time"

	"gchd/configs"
)

func TestHTTPRateLimit(t *testing.T) {
	s := startEngine(t, "sqlite", func(c *configs.Config) {
		c.Limits.HTTPRate, c.Limits.HTTPBurst = 1, 5
	})
	s.addAccount("own", "pw-own", "")
	codes := map[int]int{}
	for i := 0; i < 10; i++ {
		r := s.call("own", "pw-own", "getMyGroups", "{}")
		codes[r.status]++
		if r.status == 429 && r.header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
	if codes[200] != 5 || codes[429] != 5 {
		t.Fatalf("answers %v, want 5 × 200 then 429", codes)
	}
	if !metricAtLeast(t, s, `gchd_limits_rejections_total{limit="http_rate"}`, 5) {
		t.Fatal("rejections not counted")
	}
	// Health checks are not limited.
	if res, err := http.Get(s.base + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", res, err)
	}
}

func TestLoginThrottling(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AuthFailures, c.Limits.AuthWindow, c.Limits.AuthBan = 3, time.Minute, time.Minute
	})
	s.addAccount("alice", "pw-alice", "")
	for i := 0; i < 3; i++ {
		if r := s.call("alice", "wrong", "getMyGroups", "{}"); r.status != 401 {
			t.Fatalf("failure %d: %s", i, r)
		}
	}
	// Banned now, over HTTP and over SIP, even with the right password.
	if r := s.call("alice", "pw-alice", "getMyGroups", "{}"); r.status != 429 {
		t.Fatalf("HTTP after the ban: %s", r)
	}
	p := newPhone(t, s, "alice", "UDP")
	if res := p.send(p.registerRequest(300)); res.StatusCode != 403 {
		t.Fatalf("SIP after the ban: %s", res.StartLine())
	}
}

func TestAccountLockout(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AccountFailures, c.Limits.AuthWindow, c.Limits.AuthBan = 3, time.Minute, time.Minute
	})
	s.addAccount("alice", "pw-alice", "")
	p := newPhone(t, s, "alice", "UDP")
	p.password = "guess"
	for i := 0; i < 3; i++ {
		p.send(p.registerRequest(300))
	}
	p.password = "pw-alice"
	if res := p.send(p.registerRequest(300)); res.StatusCode != 403 {
		t.Fatalf("right password on a locked account: %s", res.StartLine())
	}
}

func TestSIPRateLimit(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.Limits.SIPRate, c.Limits.SIPBurst = 1, 3 })
	c, err := net.Dial("udp", s.app.SIPAddr("UDP"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	answered := 0
	for i := 0; i < 10; i++ {
		msg := "OPTIONS sip:" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + c.LocalAddr().String() + ";branch=z9hG4bK-rl" + string(rune('a'+i)) +
			"\r\nFrom: <sip:x@" + testDomain + ">;tag=1\r\nTo: <sip:" + testDomain + ">\r\nCall-ID: rl" + string(rune('a'+i)) +
			"\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
		c.Write([]byte(msg))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		buf := make([]byte, 4096)
		if _, err := c.Read(buf); err == nil {
			answered++
		}
	}
	if answered < 2 || answered > 5 {
		t.Fatalf("%d of 10 OPTIONS answered with a rate of 1/s and a burst of 3", answered)
	}
	if !metricAtLeast(t, s, `gchd_limits_rejections_total{limit="sip_rate"}`, 5) {
		t.Fatal("SIP rejections not counted")
	}
}

func TestConnectionCap(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.Limits.SIPConnectionsPerSource = 2 })
	var conns []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", s.app.SIPAddr("TCP"))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		defer c.Close()
	}
	c, err := net.Dial("tcp", s.app.SIPAddr("TCP"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("third connection was not closed")
	}
	conns[0].Close()
	time.Sleep(100 * time.Millisecond)
	c4, err := net.Dial("tcp", s.app.SIPAddr("TCP"))
	if err != nil {
		t.Fatal(err)
	}
	defer c4.Close()
	c4.Write([]byte("\r\n\r\n"))
	c4.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := c4.Read(make([]byte, 2)); err != nil {
		t.Fatalf("a slot freed by a close is not reusable: %v", err)
	}
}
