package robustness

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
)

// noReply stands for "no answer" among a case's acceptable outcomes.
const noReply = 0

// tortureCase is what gchd, registrar and proxy for test.local, answers one
// RFC 4475 message with, and why.
type tortureCase struct {
	file string
	// want lists the acceptable final response codes (noReply: none).
	want []int
	// rewrite lists old/new pairs replaced in a copy before sending ("{sink}"
	// in new stands for the sink's address). Everything else is sent as
	// the RFC's archive has it, byte for byte.
	rewrite []string
	// login, when set, answers a 401 with that account's credentials and
	// judges the second answer (the first is logged).
	login string
	// forward allows gchd to relay the message (a valid message a proxy
	// forwards); every other message must never leave gchd.
	forward bool
	// gap says why the observed answer differs from what the RFC prefers:
	// sipgo drops or rejects the message before any gchd code runs, so
	// nothing in sipserver/validate.go can change it.
	gap string
	// note explains gchd's answer.
	note  string
	check func(t *testing.T, res *msg, s *sink)
}

var (
	registerDomain = []string{"REGISTER sip:example.com SIP/2.0", "REGISTER sip:" + domain + " SIP/2.0"}
	sipgoDrops     = "sipgo cannot parse it and drops the datagram before any handler (transport_udp.go parseAndHandle)"
)

func rewriteAOR(user string) []string {
	return append(slices.Clone(registerDomain),
		"To: sip:"+user+"@example.com\r\n", "To: sip:"+user+"@"+domain+"\r\n",
		"From: sip:"+user+"@example.com;", "From: sip:"+user+"@"+domain+";")
}

// tortureCases covers the 50 files of INDEX.tsv.
var tortureCases = []tortureCase{
	{file: "wsinv.dat", want: []int{400, 486}, forward: true,
		rewrite: []string{"<sip:services.example.com;lr;", "<sip:{sink};lr;"},
		gap:     "sipgo keeps the LWS around '=' in params (key \" tag \"), finds no From tag, and since the top Via has no z9hG4bK branch it answers a stateless 400 (transaction.go makeServerTxKey, RFC 2543 matching)",
		note:    "Route rewritten to the test's sink: if the message ever gets through, it must be forwarded there with UnknownHeaderWithUnusualValue intact",
		check: func(t *testing.T, res *msg, s *sink) {
			if res.code != 486 {
				return
			}
			for _, r := range s.requests() {
				if strings.Contains(r.get("call-id"), "wsinv.") && r.get("unknownheaderwithunusualvalue") != ";;,,;;,;" {
					t.Errorf("forwarded UnknownHeaderWithUnusualValue = %q, want ;;,,;;,;", r.get("unknownheaderwithunusualvalue"))
				}
			}
		}},
	{file: "intmeth.dat", want: []int{403}, note: "parsed; unknown method for a foreign domain: gchd does not relay (403 Relaying Forbidden) rather than 404"},
	{file: "esc01.dat", want: []int{403}, note: "parsed; foreign domain: 403 Relaying Forbidden"},
	{file: "escnull.dat", want: []int{200}, rewrite: rewriteAOR("null-%00-null"), login: "null-%00-null",
		note: "domain rewritten; registered after the digest round (account null-%00-null), two distinct bindings",
		check: func(t *testing.T, res *msg, s *sink) {
			cs := res.all("contact")
			for _, want := range []string{"<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"} {
				if !slices.ContainsFunc(cs, func(c string) bool { return strings.HasPrefix(c, want) }) {
					t.Errorf("200 lists contacts %q, want %s", cs, want)
				}
			}
		}},
	{file: "esc02.dat", want: []int{403}, note: "RE%47IST%45R is an unknown method, not REGISTER: proxied, and the foreign R-URI is refused"},
	{file: "lwsdisp.dat", want: []int{403}, note: "parsed; an OPTIONS for a user of another domain is not relayed (403)"},
	{file: "longreq.dat", want: []int{403}, note: "parsed; foreign domain"},
	{file: "dblreq.dat", want: []int{200}, rewrite: rewriteAOR("j.user"), login: "j.user",
		note: "domain rewritten; REGISTER processed after the digest round, the trailing INVITE octets ignored and never forwarded",
		check: func(t *testing.T, res *msg, s *sink) {
			if !slices.ContainsFunc(res.all("contact"), func(c string) bool { return strings.Contains(c, "<sip:j.user@host.example.com>") }) {
				t.Errorf("200 lists contacts %q, want <sip:j.user@host.example.com>", res.all("contact"))
			}
		}},
	{file: "semiuri.dat", want: []int{403}, note: "parsed (user part 'user;par=u@example.net'); another domain's user: 403"},
	{file: "transports.dat", want: []int{403}, note: "parsed, the unknown lower Via transports are not looked at; another domain's user: 403"},
	{file: "mpart01.dat", want: []int{403}, note: "framed by Content-Length; foreign domain"},
	{file: "unreason.dat", want: []int{noReply}, note: "a response matching no transaction is dropped"},
	{file: "noreason.dat", want: []int{noReply}, note: "a response matching no transaction is dropped"},
	{file: "badinv01.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: should answer 400"},
	{file: "clerr.dat", want: []int{noReply}, gap: sipgoDrops + " (body shorter than Content-Length); RFC: should answer 400 over UDP"},
	{file: "ncl.dat", want: []int{noReply}, gap: sipgoDrops + " (negative Content-Length); RFC: should answer an error"},
	{file: "scalar02.dat", want: []int{noReply}, gap: sipgoDrops + " (CSeq over 2**32-1 fails to parse); RFC: should answer 400"},
	{file: "scalarlg.dat", want: []int{noReply}, note: "a response: dropped (sipgo cannot parse it either)"},
	{file: "quotbal.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: should answer 400"},
	{file: "ltgtruri.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: reasonable to answer 400 (never forwarded either way)"},
	{file: "lwsruri.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: should answer 400"},
	{file: "lwsstart.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: 400 or accept"},
	{file: "trws.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: 400 or accept"},
	{file: "escruri.dat", want: []int{400}, note: "validate: headers are not allowed in a Request-URI"},
	{file: "baddate.dat", want: []int{403}, note: "Date ignored; foreign domain"},
	{file: "regbadct.dat", want: []int{400, 401}, rewrite: rewriteAOR("user"),
		gap:  "sipgo infers the missing <> around the Contact and keeps ?Route= as URI headers, exactly as for regescrt: the application cannot tell them apart, so gchd is liberal (RFC allows it) and challenges",
		note: "domain rewritten to test.local"},
	{file: "badaspec.dat", want: []int{noReply}, gap: sipgoDrops + "; RFC: reasonable to answer 400"},
	{file: "baddn.dat", want: []int{noReply}, gap: sipgoDrops + " (no empty line after the headers); RFC: reasonable to answer 400"},
	{file: "badvers.dat", want: []int{505}, note: "validate; the 505 itself says SIP/2.0",
		check: func(t *testing.T, res *msg, s *sink) {
			if res.version != "SIP/2.0" {
				t.Errorf("505 sent as %s, want SIP/2.0", res.version)
			}
		}},
	{file: "mismatch01.dat", want: []int{400}, note: "validate: CSeq method differs from the request's"},
	{file: "mismatch02.dat", want: []int{400, 501}, note: "validate: CSeq method mismatch (gchd proxies unknown methods, so 400 rather than 501)"},
	{file: "bigcode.dat", want: []int{noReply}, note: "a response: dropped (sipgo cannot parse it either)"},
	{file: "badbranch.dat", want: []int{403}, note: "accepted: sipgo falls back to RFC 2543 transaction matching; another domain's user: 403"},
	{file: "insuf.dat", want: []int{400}, note: "validate: From, To and Call-ID missing"},
	{file: "unkscm.dat", want: []int{416}, note: "validate: Request-URI scheme is not sip/sips"},
	{file: "novelsc.dat", want: []int{noReply}, gap: "sipgo's URI parser refuses the scheme soap.beep and drops the datagram; RFC: parsers must accept it and answer 416"},
	{file: "unksm2.dat", want: []int{400}, note: "validate: a REGISTER's To must be a SIP/SIPS address-of-record"},
	{file: "bext01.dat", want: []int{420}, note: "validate: unknown Proxy-Require (and, gchd answering this OPTIONS, Require) tags",
		check: func(t *testing.T, res *msg, s *sink) {
			u := res.get("unsupported")
			for _, tag := range []string{"noProxiesSupportThis", "norDoAnyProxiesSupportThis", "nothingSupportsThis", "nothingSupportsThisEither"} {
				if !strings.Contains(u, tag) {
					t.Errorf("Unsupported %q lacks %s", u, tag)
				}
			}
		}},
	{file: "invut.dat", want: []int{403}, note: "a proxy does not look at the body; foreign domain"},
	{file: "regaut01.dat", want: []int{401}, rewrite: rewriteAOR("j.user"),
		note: "domain rewritten; the unknown Authorization scheme is ignored and a fresh Digest challenge sent",
		check: func(t *testing.T, res *msg, s *sink) {
			if !strings.HasPrefix(res.get("www-authenticate"), "Digest ") {
				t.Errorf("WWW-Authenticate %q, want a Digest challenge", res.get("www-authenticate"))
			}
		}},
	{file: "multi01.dat", want: []int{400}, note: "validate: several Call-ID, CSeq, From, To and Max-Forwards"},
	{file: "mcl01.dat", want: []int{400}, note: "validate: two Content-Length values"},
	{file: "bcast.dat", want: []int{noReply}, note: "a response matching no transaction: dropped, never forwarded"},
	{file: "zeromf.dat", want: []int{483}, note: "validate: Max-Forwards 0 on an OPTIONS for a user"},
	{file: "cparam01.dat", want: []int{200}, rewrite: rewriteAOR("watson"), login: "watson",
		note: "domain rewritten; registered after the digest round",
		check: func(t *testing.T, res *msg, s *sink) {
			cs := res.all("contact")
			if !slices.ContainsFunc(cs, func(c string) bool { return strings.HasPrefix(c, "<sip:+19725552222@gw1.example.net>") }) {
				t.Errorf("200 lists contacts %q, want <sip:+19725552222@gw1.example.net> without url-parameter", cs)
			}
		}},
	{file: "cparam02.dat", want: []int{200}, rewrite: rewriteAOR("watson"), login: "watson",
		note: "domain rewritten; registered after the digest round",
		check: func(t *testing.T, res *msg, s *sink) {
			cs := res.all("contact")
			if !slices.ContainsFunc(cs, func(c string) bool { return strings.HasPrefix(c, "<sip:+19725552222@gw1.example.net;unknownparam>") }) {
				t.Errorf("200 lists contacts %q, want <sip:+19725552222@gw1.example.net;unknownparam>", cs)
			}
		}},
	{file: "regescrt.dat", want: []int{200}, rewrite: rewriteAOR("user"), login: "user",
		note: "domain rewritten; registered after the digest round",
		check: func(t *testing.T, res *msg, s *sink) {
			cs := res.all("contact")
			if !slices.ContainsFunc(cs, func(c string) bool { return strings.Contains(c, "?Route=%3Csip:sip.example.com%3E>") }) {
				t.Errorf("200 lists contacts %q, want the escaped Route header kept in the contact URI", cs)
			}
		}},
	{file: "sdp01.dat", want: []int{403}, note: "a proxy does not judge Accept (406 is the UAS's answer); foreign domain"},
	{file: "inv2543.dat", want: []int{400}, note: "sipgo answers a stateless 400: an RFC 2543 transaction needs a From tag (RFC allows 400 when 2543 compatibility is not offered)"},
	{file: "test.dat", want: []int{noReply}, note: "sipgo cannot parse it and drops it (RFC: no expectation)"},
}

// tcpCase is one of the messages whose framing matters on a stream.
type tcpCase struct {
	file string
	want []int // acceptable response codes before the close (noReply: none)
	// closeAfter is when gchd must have closed the connection: at once for
	// an unrecoverable framing error, after the idle timeout when it must
	// wait for octets that never come.
	closeAfter time.Duration
	note       string
}

// tcpIdle is the idle timeout of the test server: the shortest that
// configs.Validate accepts.
const tcpIdle = 10 * time.Second

var tcpCases = []tcpCase{
	{file: "clerr.dat", want: []int{noReply}, closeAfter: tcpIdle + 5*time.Second,
		note: "waits for the 9999 body octets, closes after the idle timeout"},
	{file: "ncl.dat", want: []int{noReply}, closeAfter: 3 * time.Second,
		note: "negative Content-Length: framing lost, connection closed at once"},
	{file: "mcl01.dat", want: []int{noReply, 400}, closeAfter: 3 * time.Second,
		note: "conflicting Content-Length: sipgo's stream parser gives up and closes the connection without an answer"},
	{file: "baddn.dat", want: []int{noReply}, closeAfter: tcpIdle + 5*time.Second,
		note: "no empty line: the message never ends; closed after the idle timeout (RFC: 400 when it can be framed)"},
}

// indexRow is one line of INDEX.tsv.
type indexRow struct{ section, class, expected, sha256 string }

func readIndex(t *testing.T, dir string) map[string]indexRow {
	f, err := os.Open(filepath.Join(dir, "INDEX.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows := map[string]indexRow{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 8 || c[0] == "file" {
			continue
		}
		rows[c[0]] = indexRow{section: c[1], class: c[3], expected: c[5], sha256: c[7]}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rows
}

// result is one row of the report.
type result struct {
	name, rfc, want, got, path, note string
	by                               string // who answered: gchd's handlers, or sipgo before them
}

// TestRFC4475 sends the RFC 4475 torture messages to gchd and checks each
// answer. Responses to UDP requests go to the packet's source address and
// the Via port, 5060 when the Via names none (RFC 3261 18.2.2): the
// messages are sent from port 5060 of a random 127.x.y.z loopback address
// so that they can stay byte-exact and the answers still come back.
func TestRFC4475(t *testing.T) {
	dir := corpus(t, "rfc4475")
	index := readIndex(t, dir)
	if len(index) != 50 {
		t.Fatalf("INDEX.tsv lists %d files, want 50", len(index))
	}
	for _, c := range tortureCases {
		if _, ok := index[c.file]; !ok {
			t.Fatalf("%s is not in INDEX.tsv", c.file)
		}
	}
	if len(tortureCases) != len(index) {
		t.Fatalf("the table covers %d of the %d files", len(tortureCases), len(index))
	}
	messages := map[string][]byte{}
	for file, row := range index {
		data, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != row.sha256 {
			t.Fatalf("%s: sha256 differs from INDEX.tsv", file)
		}
		messages[file] = data
	}

	g := startGCHD(t, func(c *configs.Config) { c.SIP.IdleTimeout = tcpIdle }, "j.user", "watson", "user", "null-%00-null")
	peer := loopback5060(t, g)
	s := newSink(t, g.udp)
	s.keep = true
	peer.mustPing(t, "start")
	txs := &txClock{sent: map[string]time.Time{}}

	var mu sync.Mutex
	var results []result
	record := func(r result) {
		mu.Lock()
		results = append(results, r)
		mu.Unlock()
	}

	// UDP one after the other, then the stream cases side by side (two of
	// them wait for the idle timeout). Not both at once: "by" compares
	// gchd's request counter before and after each UDP message.
	t.Run("udp", func(t *testing.T) {
		for _, c := range tortureCases {
			t.Run(strings.TrimSuffix(c.file, ".dat"), func(t *testing.T) {
				r := runUDPCase(t, g, peer, s, txs, c, messages[c.file])
				r.rfc = index[c.file].expected
				record(r)
			})
		}
	})
	t.Run("tcp", func(t *testing.T) {
		for _, c := range tcpCases {
			t.Run(strings.TrimSuffix(c.file, ".dat"), func(t *testing.T) {
				t.Parallel()
				r := runTCPCase(t, g, peer, c, messages[c.file])
				r.rfc = index[c.file].expected
				record(r)
			})
		}
	})

	t.Logf("%d reflection and stray-response cases aimed at the canary on 127.0.0.2", g.reflectionCases(t))
	g.alive(t)
	peer.mustPing(t, "every case")
	slices.SortFunc(results, func(a, b result) int {
		if a.path != b.path {
			return strings.Compare(b.path, a.path) // udp first
		}
		return strings.Compare(a.name, b.name)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "RFC 4475 against gchd (%d cases):\n%-12s %-4s %-32s %-26s %-44s %-6s %s\n", len(results),
		"file", "via", "expected (RFC 4475 / INDEX)", "expected (gchd)", "got", "by", "note")
	for _, r := range results {
		fmt.Fprintf(&b, "%-12s %-4s %-32s %-26s %-44s %-6s %s\n", r.name, r.path, r.rfc, r.want, r.got, r.by, r.note)
	}
	t.Log(b.String())
}

// loopback5060 opens the sender's socket on port 5060 of a random loopback
// address (Linux routes all of 127.0.0.0/8 to lo).
func loopback5060(t *testing.T, g *gchd) *udpPeer {
	for range 50 {
		addr := fmt.Sprintf("127.%d.%d.%d:5060", 1+rand.IntN(254), rand.IntN(256), 1+rand.IntN(254))
		if p, err := newUDPPeer(t, addr, g.udp); err == nil {
			return p
		}
	}
	t.Skip("cannot bind UDP port 5060 on any 127.x.y.z address: the byte-exact torture messages need it to receive answers")
	return nil
}

func runUDPCase(t *testing.T, g *gchd, peer *udpPeer, s *sink, txs *txClock, c tortureCase, data []byte) result {
	r := result{name: strings.TrimSuffix(c.file, ".dat"), path: "udp", want: codes(c.want), note: c.note}
	if c.gap != "" {
		r.note = strings.TrimSpace("GAP: " + c.gap + ". " + c.note)
	}
	raw := data
	if len(c.rewrite) > 0 {
		pairs := slices.Clone(c.rewrite)
		for i := range pairs {
			pairs[i] = strings.ReplaceAll(pairs[i], "{sink}", s.addr().String())
		}
		raw = []byte(strings.NewReplacer(pairs...).Replace(string(data)))
		if bytes.Equal(raw, data) {
			t.Fatalf("rewrite %q changed nothing", c.rewrite)
		}
		r.note = strings.TrimSpace(r.note + fmt.Sprintf(" [rewritten: %s]", rewrites(c.rewrite)))
	}
	// multi01 carries two Call-IDs and CSeqs: an answer may quote either.
	callIDs := headerLines(raw, "call-id", "i")
	if len(callIDs) == 0 {
		callIDs = []string{""} // insuf: the answer has no Call-ID either
	}
	var cseqs []int
	for _, v := range headerLines(raw, "cseq", "") {
		if n, err := strconv.Atoi(strings.Fields(v + " x")[0]); err == nil {
			cseqs = append(cseqs, n)
		}
	}
	wait := 2 * time.Second
	if c.want[0] == noReply {
		wait = 500 * time.Millisecond
	}
	txs.wait(t, raw)
	relayed, handled := g.relayed(), g.handled()
	final, _, err := peer.exchangeAny(raw, callIDs, withCSeq(cseqs...), wait)
	if err != nil {
		t.Fatal(err)
	}
	r.by = "sipgo"
	if g.handled() > handled {
		r.by = "gchd"
	}
	r.got = describe(final)
	if c.login != "" && final != nil && final.code == 401 {
		auth, err := sipua.Authorize(final.get("www-authenticate"), "REGISTER", "sip:"+domain, c.login, testkit.Password(c.login))
		if err != nil {
			t.Fatalf("answer the challenge: %v", err)
		}
		retry := withCredentials(t, raw, auth)
		final, _, err = peer.exchange(retry, callIDs[0], cseqs[0]+1, wait)
		if err != nil {
			t.Fatal(err)
		}
		r.got += " -> " + describe(final)
	}
	code := noReply
	if final != nil {
		code = final.code
	}
	if !slices.Contains(c.want, code) {
		t.Errorf("%s: got %s, want %s", c.file, r.got, r.want)
	}
	if final != nil && c.check != nil {
		c.check(t, final, s)
	}
	if n := g.relayed() - relayed; n > 0 && !c.forward {
		t.Errorf("%s: gchd relayed %v request(s); a bad or refused message must never leave it", c.file, n)
	}
	g.alive(t)
	peer.mustPing(t, c.file)
	return r
}

func runTCPCase(t *testing.T, g *gchd, peer *udpPeer, c tcpCase, data []byte) result {
	r := result{name: strings.TrimSuffix(c.file, ".dat"), path: "tcp", want: codes(c.want) + ", close", note: c.note, by: "-"}
	conn, err := net.Dial("tcp", g.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	relayed := g.relayed()
	if _, err := conn.Write(data); err != nil {
		t.Fatal(err)
	}
	msgs, closed, after := readStream(conn, c.closeAfter)
	var got []string
	code := noReply
	for _, m := range msgs {
		got = append(got, describe(m))
		if m.code >= 200 && code == noReply {
			code = m.code
		}
	}
	if len(got) == 0 {
		got = append(got, "no reply")
	}
	if closed {
		got = append(got, fmt.Sprintf("closed after %.1fs", after.Seconds()))
	} else {
		got = append(got, fmt.Sprintf("still open after %.1fs", after.Seconds()))
	}
	r.got = strings.Join(got, ", ")
	if !slices.Contains(c.want, code) {
		t.Errorf("%s over TCP: got %s, want %s", c.file, r.got, r.want)
	}
	if !closed {
		t.Errorf("%s over TCP: gchd kept the connection open %v", c.file, c.closeAfter)
	}
	if n := g.relayed() - relayed; n > 0 {
		t.Errorf("%s over TCP: gchd relayed %v request(s)", c.file, n)
	}
	g.alive(t)
	peer.mustPing(t, c.file+" over TCP")
	tcpPing(t, g)
	return r
}

// tcpPing checks that gchd answers an OPTIONS on a new TCP connection.
func tcpPing(t *testing.T, g *gchd) {
	t.Helper()
	conn, err := net.Dial("tcp", g.tcp)
	if err != nil {
		t.Fatalf("connect over TCP: %v", err)
	}
	defer conn.Close()
	id := randHex(8)
	fmt.Fprintf(conn, "OPTIONS sip:%s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK-tping-%s\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=%s\r\nTo: <sip:%s>\r\nCall-ID: tping-%s\r\n"+
		"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", domain, conn.LocalAddr(), id, domain, id, domain, id)
	msgs, _, _ := readStream(conn, 2*time.Second)
	for _, m := range msgs {
		if m.code == 200 {
			return
		}
	}
	t.Fatalf("OPTIONS over a new TCP connection: got %v, want 200", msgs)
}

// withCredentials turns a challenged REGISTER into its retry: an
// Authorization header after the request line, a new branch on the top
// Via and the next CSeq number. The octets after the headers stay as they
// were (dblreq's trailing INVITE).
func withCredentials(t *testing.T, raw []byte, auth string) []byte {
	head, rest, ok := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !ok {
		t.Fatal("no end of headers")
	}
	lines := strings.Split(string(head), "\r\n")
	out := []string{lines[0], "Authorization: " + auth}
	via, cseq := false, false
	for _, l := range lines[1:] {
		name, value, _ := strings.Cut(l, ":")
		switch n := strings.ToLower(strings.TrimSpace(name)); {
		case !via && (n == "via" || n == "v"):
			via = true
			l = strings.Replace(l, ";branch=z9hG4bK", ";branch=z9hG4bK-retry-", 1)
		case !cseq && n == "cseq":
			cseq = true
			num, method, _ := strings.Cut(strings.TrimSpace(value), " ")
			v, err := strconv.Atoi(num)
			if err != nil {
				t.Fatalf("CSeq %q", value)
			}
			l = fmt.Sprintf("CSeq: %d %s", v+1, method)
		}
		out = append(out, l)
	}
	return append([]byte(strings.Join(out, "\r\n")+"\r\n\r\n"), rest...)
}

// txClock spaces messages that sipgo would take for retransmissions. Many
// torture messages share a branch (z9hG4bKkdjuw); two of them with the
// same sent-by and CSeq method too (cparam01 and cparam02) are one server
// transaction for sipgo (RFC 3261 17.2.3), and the second would only get
// the first's answer again. The second waits until the first's
// transaction is gone (Timer J, 64*T1).
type txClock struct{ sent map[string]time.Time }

func (c *txClock) wait(t *testing.T, raw []byte) {
	vias, cseqs := headerLines(raw, "via", "v"), headerLines(raw, "cseq", "")
	if len(vias) == 0 || len(cseqs) == 0 {
		return
	}
	via, _, _ := strings.Cut(vias[0], ",")
	sentBy, params, _ := strings.Cut(via, ";")
	var branch string
	for _, p := range strings.Split(params, ";") {
		if k, v, _ := strings.Cut(p, "="); strings.TrimSpace(k) == "branch" {
			branch = strings.TrimSpace(v)
		}
	}
	f := strings.Fields(cseqs[0])
	key := branch + "|" + strings.TrimSpace(sentBy) + "|" + f[len(f)-1]
	if last, ok := c.sent[key]; ok {
		if d := time.Until(last.Add(sip.Timer_J + 300*time.Millisecond)); d > 0 {
			t.Logf("same transaction key as an earlier message (%s): waiting %v for it to end", key, d.Round(time.Millisecond))
			time.Sleep(d)
		}
	}
	c.sent[key] = time.Now()
}

func describe(m *msg) string {
	if m == nil {
		return "no reply"
	}
	return m.String()
}

func codes(want []int) string {
	var s []string
	for _, c := range want {
		if c == noReply {
			s = append(s, "no reply")
		} else {
			s = append(s, strconv.Itoa(c))
		}
	}
	return strings.Join(s, " or ")
}

func rewrites(pairs []string) string {
	var s []string
	for i := 0; i+1 < len(pairs); i += 2 {
		s = append(s, strings.TrimSpace(pairs[i])+" => "+strings.TrimSpace(pairs[i+1]))
	}
	return strings.Join(s, "; ")
}
