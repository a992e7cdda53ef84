package sipserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

// The framer passes sipgo every byte it does not take, in order, takes
// only whole REGISTERs it can delimit with certainty, and gives up framing
// (passes everything) where it cannot.
func TestFramedConn(t *testing.T) {
	// With credentials: one without would be answered (challenged) at once.
	const credentials = `Authorization: Digest username="ann", realm="example.org", nonce="n", uri="sip:example.org", response="r"` + "\r\n"
	register := func(callID, body string) string {
		return "REGISTER sip:example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-" + callID +
			"\r\nFrom: <sip:ann@example.org>;tag=1\r\nTo: <sip:ann@example.org>\r\nCall-ID: " + callID +
			"\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n" + credentials + "Content-Length: " + itoa(len(body)) + "\r\n\r\n" + body
	}
	message := "MESSAGE sip:bob@example.org SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-m\r\n" +
		"From: <sip:ann@example.org>;tag=1\r\nTo: <sip:bob@example.org>\r\nCall-ID: m1\r\nCSeq: 1 MESSAGE\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	reg1, reg2 := register("r1", ""), register("r2", "")
	tests := []struct {
		name      string
		writes    []string
		queue     int      // room in the workers' queue
		taken     []string // Call-IDs queued
		passed    string   // what sipgo reads
		keepAlive bool     // a read of exactly CRLF CRLF
	}{
		{"a REGISTER", []string{reg1}, 8, []string{"r1"}, "", false},
		{"a REGISTER in three pieces", []string{reg1[:7], reg1[7:60], reg1[60:]}, 8, []string{"r1"}, "", false},
		{"two REGISTERs in one read", []string{reg1 + reg2}, 8, []string{"r1", "r2"}, "", false},
		{"a REGISTER with a body", []string{register("r3", "x=1")}, 8, []string{"r3"}, "", false},
		{"a REGISTER with bare LFs goes to sipgo (its parser decides)", []string{strings.ReplaceAll(reg1, "\r\n", "\n") + reg2}, 8,
			[]string{"r2"}, strings.ReplaceAll(reg1, "\r\n", "\n"), false},
		{"a MESSAGE, then a REGISTER", []string{message + reg1}, 8, []string{"r1"}, message, false},
		{"a MESSAGE's body in the next read", []string{message[:len(message)-3], message[len(message)-3:] + reg1}, 8,
			[]string{"r1"}, message, false},
		{"a keep-alive after a REGISTER", []string{reg1 + "\r\n\r\n"}, 8, []string{"r1"}, "\r\n\r\n", true},
		{"a REGISTER over a full queue goes to sipgo", []string{reg1 + reg2}, 1, []string{"r1"}, reg2, false},
		{"garbage passes at once, and all after it", []string{"hello\r\n", reg1}, 8, nil, "hello\r\n" + reg1, false},
		{"a MESSAGE's header in pieces: all passes", []string{message[:20], message[20:] + reg1}, 8, nil, message + reg1, false},
		{"no Content-Length: all passes", []string{strings.Replace(reg1, "Content-Length: 0\r\n", "", 1) + reg2}, 8, nil,
			strings.Replace(reg1, "Content-Length: 0\r\n", "", 1) + reg2, false},
		{"two Content-Lengths: all passes", []string{strings.Replace(reg1, "\r\n\r\n", "\r\nl: 0\r\n\r\n", 1)}, 8, nil,
			strings.Replace(reg1, "\r\n\r\n", "\r\nl: 0\r\n\r\n", 1), false},
		{"an unparsable REGISTER goes to sipgo", []string{"REGISTER nonsense\r\nContent-Length: 0\r\n\r\n" + reg1}, 8,
			[]string{"r1"}, "REGISTER nonsense\r\nContent-Length: 0\r\n\r\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Stack: &Stack{}}
			workers := newRegisterWorkers(s)
			workers.work = make(chan ingressJob, tt.queue)
			in := newStreamIngress(s, nil, "TCP", workers)
			client, server := net.Pipe()
			c := &framedConn{Conn: server, in: in, src: "192.0.2.1:5060"}
			go func() {
				for _, w := range tt.writes {
					client.Write([]byte(w))
				}
				client.Close()
			}()
			var passed bytes.Buffer
			keepAlive := false
			buf := make([]byte, 65535)
			for {
				n, err := c.Read(buf)
				passed.Write(buf[:n])
				if string(buf[:n]) == "\r\n\r\n" {
					keepAlive = true
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			var taken []string
			for len(workers.work) > 0 {
				taken = append(taken, (<-workers.work).req.CallID().Value())
			}
			if strings.Join(taken, ",") != strings.Join(tt.taken, ",") {
				t.Errorf("taken %v, want %v", taken, tt.taken)
			}
			if passed.String() != tt.passed {
				t.Errorf("sipgo read %q, want %q", passed.String(), tt.passed)
			}
			if keepAlive != tt.keepAlive {
				t.Errorf("keep-alive read on its own: %v, want %v", keepAlive, tt.keepAlive)
			}
		})
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
