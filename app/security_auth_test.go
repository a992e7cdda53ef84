package app

import (
	"bytes"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"gchd/internal/testkit"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/storage"
)

// digestClient is a bare SIP client over UDP from a chosen local address:
// it registers with digest auth, answering one challenge, so that tests
// can speak as two distinct sources (127.0.0.1 and 127.0.0.2).
type digestClient struct {
	t      testing.TB
	conn   *net.UDPConn
	parser *sip.Parser
	seq    int
}

func newDigestClient(t testing.TB, s *server, localIP string) *digestClient {
	t.Helper()
	raddr, err := net.ResolveUDPAddr("udp", s.app.SIPAddr("UDP"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(localIP)}, raddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &digestClient{t: t, conn: conn, parser: sip.NewParser()}
}

// exchange sends one request and returns the final answer (1xx skipped).
func (c *digestClient) exchange(msg string) *sip.Response {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(msg)); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 65535)
	for {
		c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := c.conn.Read(buf)
		if err != nil {
			c.t.Fatalf("no answer to %q: %v", strings.SplitN(msg, "\r\n", 2)[0], err)
		}
		m, err := c.parser.ParseSIP(buf[:n])
		if err != nil {
			c.t.Fatalf("unparsable answer %q: %v", buf[:n], err)
		}
		if res, ok := m.(*sip.Response); ok && res.StatusCode >= 200 {
			return res
		}
	}
}

// register REGISTERs login with password and returns the final answer's
// status line: the challenge is answered once.
func (c *digestClient) register(login, password string) string {
	c.t.Helper()
	c.seq++
	laddr := c.conn.LocalAddr().String()
	callID := fmt.Sprintf("sec-%s-%d-%d@test", login, c.seq, time.Now().UnixNano())
	build := func(cseq int, auth string) string {
		var b strings.Builder
		fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", testDomain)
		fmt.Fprintf(&b, "Via: SIP/2.0/UDP %s;branch=z9hG4bK-sec%d-%d;rport\r\n", laddr, c.seq, cseq)
		fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=sec%d\r\n", login, testDomain, c.seq)
		fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", login, testDomain)
		fmt.Fprintf(&b, "Call-ID: %s\r\nCSeq: %d REGISTER\r\n", callID, cseq)
		fmt.Fprintf(&b, "Contact: <sip:%s@%s>\r\nExpires: 60\r\nMax-Forwards: 70\r\n", login, laddr)
		if auth != "" {
			fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
		}
		b.WriteString("Content-Length: 0\r\n\r\n")
		return b.String()
	}
	res := c.exchange(build(1, ""))
	if res.StatusCode != 401 {
		return res.StartLine()
	}
	chal := res.GetHeader("WWW-Authenticate")
	if chal == nil {
		c.t.Fatalf("401 without a challenge: %s", res)
	}
	nonce := digestParam(chal.Value(), "nonce")
	realm := digestParam(chal.Value(), "realm")
	uri := "sip:" + testDomain
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	ha1 := h(login + ":" + realm + ":" + password)
	ha2 := h("REGISTER:" + uri)
	cnonce := fmt.Sprintf("c%d", c.seq)
	response := h(ha1 + ":" + nonce + ":00000001:" + cnonce + ":auth:" + ha2)
	auth := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", response="%s", algorithm=MD5, qop=auth, nc=00000001, cnonce="%s"`,
		login, realm, nonce, uri, response, cnonce)
	return c.exchange(build(2, auth)).StartLine()
}

// digestParam returns a quoted parameter of a Digest challenge.
func digestParam(v, name string) string {
	i := strings.Index(v, name+`="`)
	if i < 0 {
		return ""
	}
	rest := v[i+len(name)+2:]
	return rest[:strings.IndexByte(rest, '"')]
}

// httpFrom returns a client whose connections leave from localIP.
func httpFrom(localIP string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

// callFrom calls getMyGroups as login over HTTP from client; the status.
func (s *server) callFrom(client *http.Client, login, password string) int {
	s.t.Helper()
	form := url.Values{"gm": {"getMyGroups"}, "pm": {"{}"}}
	req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(login, password)
	res, err := client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}

// The rate limit counts SIP messages, not reads: 3,000 OPTIONS written at
// once on one TCP (or TLS) connection are not all answered at 200/s, while
// 300 within the burst all are.
func TestSecurityRateCountsPipelinedMessages(t *testing.T) {
	for _, transport := range []string{"TCP", "TLS"} {
		t.Run(transport, func(t *testing.T) {
			s := startSIP(t, func(c *configs.Config) { c.Limits.SIPRate, c.Limits.SIPBurst = 200, 400 })
			pipeline := func(sent int, split bool) int {
				var c net.Conn
				var err error
				if transport == "TLS" {
					c, err = tls.Dial("tcp", s.app.SIPAddr("TLS"), &tls.Config{InsecureSkipVerify: true})
				} else {
					c, err = net.Dial("tcp", s.app.SIPAddr("TCP"))
				}
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				var b bytes.Buffer
				for i := 0; i < sent; i++ {
					fmt.Fprintf(&b, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/%s %s;branch=z9hG4bK-pipe%d\r\n"+
						"From: <sip:x@%s>;tag=p\r\nTo: <sip:%s>\r\nCall-ID: pipe%d-%d\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
						testDomain, transport, c.LocalAddr(), i, testDomain, testDomain, sent, i)
				}
				go func() {
					if split {
						// A header in pieces stops the framing: the rest of
						// the connection is counted by the blank lines
						// ending its headers.
						c.Write(b.Bytes()[:20])
						time.Sleep(50 * time.Millisecond)
						c.Write(b.Bytes()[20:])
						return
					}
					c.Write(b.Bytes())
				}()
				want := []byte("SIP/2.0 200 ")
				var got []byte
				buf := make([]byte, 1<<16)
				for bytes.Count(got, want) < sent {
					c.SetReadDeadline(time.Now().Add(2 * time.Second))
					n, err := c.Read(buf)
					got = append(got, buf[:n]...)
					if err != nil {
						break
					}
				}
				return bytes.Count(got, want)
			}
			for _, split := range []bool{false, true} {
				if n := pipeline(300, split); n != 300 {
					t.Fatalf("%d of 300 pipelined OPTIONS answered within a burst of 400 (first header split: %v)", n, split)
				}
				const sent = 3000
				answered := pipeline(sent, split)
				t.Logf("%d of %d pipelined OPTIONS answered (first header split: %v)", answered, sent, split)
				if answered > 600 {
					t.Fatalf("%d of %d pipelined OPTIONS answered with a rate of 200/s and a burst of 400 (first header split: %v)",
						answered, sent, split)
				}
				time.Sleep(2 * time.Second) // the bucket fills again
			}
			if !metricAtLeast(t, s, `gchd_limits_rejections_total{limit="sip_rate"}`, 1) {
				t.Fatal("rejection not counted")
			}
		})
	}
}

// A guesser holding one good account does not erase its failures by
// logging in with it between guesses: it is banned all the same, over
// HTTP and over SIP.
func TestSecurityGoodLoginDoesNotEraseGuesses(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AuthFailures, c.Limits.AuthWindow, c.Limits.AuthBan = 20, time.Minute, time.Minute
	})
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("mallory", "pw-mallory", "")
	t.Run("HTTP", func(t *testing.T) {
		client := httpFrom("127.0.0.1")
		for i := 0; i < 40; i++ {
			if code := s.callFrom(client, "mallory", "pw-mallory"); code == 429 {
				if i != 20 {
					t.Fatalf("banned after %d guesses, want 20", i)
				}
				return
			}
			s.callFrom(client, "alice", fmt.Sprintf("guess%d", i))
		}
		t.Fatal("40 guesses between good logins and no ban")
	})
	t.Run("SIP", func(t *testing.T) {
		c := newDigestClient(t, s, "127.0.0.3")
		for i := 0; i < 40; i++ {
			if got := c.register("mallory", "pw-mallory"); !strings.HasPrefix(got, "SIP/2.0 200") {
				if i != 20 || !strings.Contains(got, "403") {
					t.Fatalf("after %d guesses: %s", i, got)
				}
				return
			}
			c.register("alice", fmt.Sprintf("guess%d", i))
		}
		t.Fatal("40 guesses between good logins and no ban")
	})
}

// A locked login or a banned source gets one answer whatever the
// password: the lock is no oracle.
func TestSecurityLockIsNoOracle(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AuthFailures, c.Limits.AccountFailures = 10, 5
		c.Limits.AuthWindow, c.Limits.AuthBan = time.Minute, time.Minute
	})
	s.addAccount("alice", "pw-alice", "")
	c := newDigestClient(t, s, "127.0.0.1")
	client := httpFrom("127.0.0.1")
	for i := 0; i < 5; i++ {
		if got := c.register("alice", fmt.Sprintf("guess%d", i)); !strings.HasPrefix(got, "SIP/2.0 401") {
			t.Fatalf("guess %d: %s", i, got)
		}
	}
	same := func(stage string) {
		t.Helper()
		right, wrong := c.register("alice", "pw-alice"), c.register("alice", "nope")
		if right != wrong || !strings.Contains(right, "403") {
			t.Errorf("%s, SIP: right password %q, wrong %q; want one 403", stage, right, wrong)
		}
		r, w := s.callFrom(client, "alice", "pw-alice"), s.callFrom(client, "alice", "nope")
		if r != w || r != 429 {
			t.Errorf("%s, HTTP: right password %d, wrong %d; want one 429", stage, r, w)
		}
	}
	same("login locked")
	for i := 0; i < 10; i++ {
		c.register("bob", fmt.Sprintf("guess%d", i))
	}
	same("source banned")
	if !s.app.guards.authSource.Banned("127.0.0.1") {
		t.Error("the source is not banned after 10 further attempts")
	}
}

// 50 wrong REGISTERs from one source do not lock alice out of SIP or HTTP
// from a source that has not failed; the failing source stays locked out.
func TestSecurityOthersCannotLockOwnerOut(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AuthFailures, c.Limits.AccountFailures = 100, 50
		c.Limits.AuthWindow, c.Limits.AuthBan = time.Minute, 5*time.Minute
	})
	s.addAccount("alice", "pw-alice", "")
	attacker := newDigestClient(t, s, "127.0.0.1")
	for i := 0; i < 50; i++ {
		attacker.register("alice", fmt.Sprintf("guess%d", i))
	}
	if got := attacker.register("alice", "pw-alice"); !strings.Contains(got, "403") {
		t.Errorf("the failing source with the right password: %s, want 403", got)
	}
	owner := newDigestClient(t, s, "127.0.0.2")
	if got := owner.register("alice", "pw-alice"); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Errorf("alice over SIP from a clean source: %s", got)
	}
	if code := s.callFrom(httpFrom("127.0.0.2"), "alice", "pw-alice"); code != 200 {
		t.Errorf("alice over HTTP from a clean source: %d", code)
	}
}

// An unknown login takes as long to refuse as a wrong password, so that
// timing does not tell which logins exist.
func TestSecurityUnknownLoginTiming(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("alice", "pw-alice", "")
		client := httpFrom("127.0.0.1")
		const tries = 400
		var known, unknown []time.Duration
		measure := func(login string) time.Duration {
			start := time.Now()
			if code := s.callFrom(client, login, "wrong"); code != 401 {
				t.Fatalf("%s: %d", login, code)
			}
			return time.Since(start)
		}
		for i := 0; i < 50; i++ { // warm up connections and caches
			measure("alice")
			measure("nobody")
		}
		for i := 0; i < tries; i++ {
			known = append(known, measure("alice"))
			unknown = append(unknown, measure(fmt.Sprintf("nobody%d", i%5)))
		}
		median := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
		k, u := median(known), median(unknown)
		t.Logf("median over %d: wrong password %v, unknown login %v", tries, k, u)
		diff := u - k
		if diff < 0 {
			diff = -diff
		}
		if diff > 60*time.Microsecond && diff > k/5 {
			t.Fatalf("unknown login %v, wrong password %v: timing tells them apart", u, k)
		}
		// A login remembered as unknown can log in once created.
		s.addAccount("nobody0", "pw-nobody0", "")
		if code := s.callFrom(client, "nobody0", "pw-nobody0"); code != 200 {
			t.Fatalf("a new account, looked up before it existed: %d", code)
		}
	})
}
