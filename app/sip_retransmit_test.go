package app

import (
	"bytes"
	"fmt"
	"gchd/internal/testkit/sipua"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"gchd/configs"
)

// udpExchange sends one datagram and returns the answer.
func udpExchange(t *testing.T, c net.Conn, msg string) []byte {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 8192)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return buf[:n]
}

// A request retransmitted over UDP (same branch) gets the answer of the
// first copy, byte for byte, and is not acted on again: a REGISTER is not
// challenged anew (the nonce would differ), a group post is not posted
// twice. gchd keeps the encoded answer, not the transaction.
func TestUDPRetransmissionAnsweredOnce(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	for _, l := range []string{"own", "ann"} {
		s.addAccount(l, "pw-"+l, "")
	}
	id := groupOf(t, s, "own", "ann")
	c := s.dial("UDP")
	local := c.LocalAddr().String()

	register := func(branch string) string {
		return "REGISTER sip:" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-" + branch +
			"\r\nFrom: <sip:ann@" + testDomain + ">;tag=r1\r\nTo: <sip:ann@" + testDomain + ">\r\nCall-ID: rt-reg-" + branch +
			"\r\nCSeq: 1 REGISTER\r\nContact: <sip:ann@" + local + ">\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	}
	first := udpExchange(t, c, register("reg1"))
	if !bytes.HasPrefix(first, []byte("SIP/2.0 401")) {
		t.Fatalf("REGISTER without credentials: %q", first)
	}
	if again := udpExchange(t, c, register("reg1")); !bytes.Equal(again, first) {
		t.Fatalf("retransmitted REGISTER got another answer:\n%s\nfirst:\n%s", again, first)
	}
	if other := udpExchange(t, c, register("reg2")); bytes.Equal(other, first) {
		t.Fatal("a new REGISTER got the old challenge")
	}

	post := func(branch, text string) string {
		return fmt.Sprintf("MESSAGE sip:gc-%d@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-%s\r\nFrom: <sip:own@%s>;tag=p1\r\n"+
			"To: <sip:gc-%d@%s>\r\nCall-ID: rt-post-%s\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\n"+
			"Content-Length: %d\r\n\r\n%s", id, testDomain, local, branch, testDomain, id, testDomain, branch, len(text), text)
	}
	midOf := func(answer []byte) uint64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^X-GC-MID: *(\d+)`).FindSubmatch(answer)
		if m == nil || !bytes.HasPrefix(answer, []byte("SIP/2.0 202")) {
			t.Fatalf("group post answered %q", answer)
		}
		mid, _ := strconv.ParseUint(string(m[1]), 10, 64)
		return mid
	}
	posted := udpExchange(t, c, post("p1", "once"))
	mid := midOf(posted)
	if again := udpExchange(t, c, post("p1", "once")); !bytes.Equal(again, posted) {
		t.Fatalf("retransmitted post got another answer:\n%s\nfirst:\n%s", again, posted)
	}
	// Had the retransmission been posted, it would have taken mid+1.
	if next := midOf(udpExchange(t, c, post("p2", "twice"))); next != mid+1 {
		t.Fatalf("the next post got MID %d after %d: the retransmission was posted again", next, mid)
	}
}

// Copies of a REGISTER that arrive while the first is still being
// processed (its binding being committed) are not processed again: they
// would be refused as out of order (same Call-ID and CSeq), and a phone
// that took that 400 for the answer would think itself unregistered. Every
// answer that comes back is the first copy's 200.
func TestUDPRetransmissionBurstProcessedOnce(t *testing.T) {
	s := startSIP(t)
	s.addAccount("ann", "pw-ann", "")
	c := s.dial("UDP")
	local := c.LocalAddr().String()
	register := func(branch string, cseq int, auth string) string {
		return "REGISTER sip:" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-" + branch +
			"\r\nFrom: <sip:ann@" + testDomain + ">;tag=b1\r\nTo: <sip:ann@" + testDomain + ">\r\nCall-ID: burst-reg" +
			"\r\nCSeq: " + strconv.Itoa(cseq) + " REGISTER\r\nContact: <sip:ann@" + local + ">\r\nMax-Forwards: 70\r\n" + auth +
			"Content-Length: 0\r\n\r\n"
	}
	challenge := udpExchange(t, c, register("b1", 1, ""))
	m := regexp.MustCompile(`(?m)^WWW-Authenticate: *(.+?)\r$`).FindSubmatch(challenge)
	if m == nil {
		t.Fatalf("no challenge: %q", challenge)
	}
	auth, err := sipua.Authorize(string(m[1]), "REGISTER", "sip:"+testDomain, "ann", "pw-ann")
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte(register("b2", 2, "Authorization: "+auth+"\r\n"))
	const copies = 30
	for range copies {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
	}
	var first []byte
	answers := 0
	buf := make([]byte, 8192)
	for {
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			break
		}
		answers++
		if first == nil {
			first = bytes.Clone(buf[:n])
			if !bytes.HasPrefix(first, []byte("SIP/2.0 200")) {
				t.Fatalf("REGISTER answered %q", first)
			}
		} else if !bytes.Equal(buf[:n], first) {
			t.Fatalf("a copy got another answer:\n%s\nfirst:\n%s", buf[:n], first)
		}
	}
	if answers == 0 || answers > copies {
		t.Fatalf("%d answers to %d copies", answers, copies)
	}
	for sample, want := range map[string]float64{
		`gchd_registrar_registrations_total{result="registered"}`: 1,
		`gchd_registrar_registrations_total{result="invalid"}`:    0,
	} {
		if v, _ := metricValue(t, s, sample); v != want {
			t.Errorf("%s = %v, want %v", sample, v, want)
		}
	}
}

// A MESSAGE relayed to a phone over UDP: its retransmission gets the
// relayed 200 again, byte for byte, and is not relayed a second time. The
// answer comes from the kept answers: the relaying transaction ended when
// it answered.
func TestUDPRelayedAnswerKept(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) { c.SIP.Trusted = "127.0.0.0/8" })
	s.addAccount("ann", "pw-ann", "")
	s.addAccount("bob", "pw-bob", "")
	bob := newPhone(t, s, "bob", "UDP")
	if res := bob.register(); res.StatusCode != 200 {
		t.Fatalf("REGISTER: %s", res.StartLine())
	}
	c := s.dial("UDP")
	local := c.LocalAddr().String()
	msg := "MESSAGE sip:bob@" + testDomain + " SIP/2.0\r\nVia: SIP/2.0/UDP " + local + ";branch=z9hG4bK-relay1\r\n" +
		"From: <sip:ann@" + testDomain + ">;tag=a1\r\nTo: <sip:bob@" + testDomain + ">\r\nCall-ID: relay-kept\r\n" +
		"CSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	first := udpExchange(t, c, msg)
	if !bytes.HasPrefix(first, []byte("SIP/2.0 200")) {
		t.Fatalf("relayed MESSAGE answered %q", first)
	}
	if again := udpExchange(t, c, msg); !bytes.Equal(again, first) {
		t.Fatalf("retransmitted MESSAGE got another answer:\n%s\nfirst:\n%s", again, first)
	}
	bob.waitFor(1)
	time.Sleep(200 * time.Millisecond)
	bob.mu.Lock()
	n := len(bob.inbox)
	bob.mu.Unlock()
	if n != 1 {
		t.Fatalf("bob received the MESSAGE %d times", n)
	}
}
