package app

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

// countingConn counts the MESSAGE datagrams a phone's socket receives,
// retransmissions included: what one MESSAGE to its user costs the network.
type countingConn struct {
	net.PacketConn
	messages *atomic.Int64
}

func (c countingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil && bytes.HasPrefix(b[:n], []byte("MESSAGE ")) {
		c.messages.Add(1)
	}
	return n, a, err
}

// countingMessages makes a UDP phone count the MESSAGE datagrams it receives.
func countingMessages(n *atomic.Int64) phoneOption {
	return func(p *phone) {
		if p.sip.Conn != nil {
			p.sip.Conn = countingConn{p.sip.Conn, n}
		}
	}
}

// withContacts replaces the REGISTER's Contact with one header per URI.
func withContacts(req *sip.Request, uris []string) *sip.Request {
	req.RemoveHeader("Contact")
	for _, u := range uris {
		req.AppendHeader(sip.NewHeader("Contact", "<"+u+">"))
	}
	return req
}

// storedBindings counts the AOR's bindings in the database.
func storedBindings(t *testing.T, s *server, aor string) int {
	t.Helper()
	list, err := s.app.db.BindingStore().LoadBindings(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, b := range list {
		if b.AOR == aor {
			n++
		}
	}
	return n
}

// A REGISTER carrying 1,000 Contacts, then REGISTERs that each bring the
// limit's worth of new ones: the user never has more than max_contacts
// bindings, in memory, in the database, or after a restart reloads them,
// and one MESSAGE to her makes at most max_contacts datagrams. (Before,
// the database kept all 1,000, because a binding the same REGISTER had
// evicted was written back, and after a restart one 11-byte MESSAGE went
// to every one of them.)
func TestContactFloodStaysWithinLimit(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		for _, transport := range []string{"UDP", "TCP"} {
			t.Run(transport, func(t *testing.T) {
				cfg := testConfig(t, engine)
				limit := cfg.Registrar.MaxContacts
				s := start(t, cfg)
				s.addAccount("alice", "pw-alice", "")
				s.addAccount("bob", "pw-bob", "")
				var datagrams atomic.Int64
				p := newPhone(t, s, "alice", transport, countingMessages(&datagrams))
				uri := func(name string) string {
					if transport == "UDP" {
						return fmt.Sprintf("sip:%s@127.0.0.1:%d", name, p.contact.Port)
					}
					return "sip:" + name + "@alice.invalid;transport=tcp"
				}
				var flood []string
				for i := range 1000 {
					flood = append(flood, uri(fmt.Sprintf("c%d", i)))
				}
				res := p.send(withContacts(p.registerRequest(600), flood))
				t.Logf("REGISTER with %d Contacts: %s, %d listed, %d in memory, %d stored", len(flood), res.StartLine(),
					len(res.GetHeaders("Contact")), len(s.app.bindings.Lookup("alice")), storedBindings(t, s, "alice"))
				if res.StatusCode != 403 {
					t.Errorf("REGISTER with %d Contacts answered %s, want 403", len(flood), res.StartLine())
				}
				check := func(s *server, when string) {
					t.Helper()
					if n := len(s.app.bindings.Lookup("alice")); n > limit {
						t.Fatalf("%s: %d bindings in memory, limit %d", when, n, limit)
					}
					if n := storedBindings(t, s, "alice"); n > limit {
						t.Fatalf("%s: %d bindings stored, limit %d", when, n, limit)
					}
				}
				check(s, "after the flood")
				// Each REGISTER brings the limit's worth of new contacts and
				// refreshes one of the last: the oldest give way.
				for r := range 5 {
					var batch []string
					for i := range limit - 1 {
						batch = append(batch, uri(fmt.Sprintf("r%d-%d", r, i)))
					}
					if r > 0 {
						batch = append(batch, uri(fmt.Sprintf("r%d-0", r-1)))
					} else {
						batch = append(batch, uri("first"))
					}
					if res := p.send(withContacts(p.registerRequest(600), batch)); res.StatusCode != 200 || len(res.GetHeaders("Contact")) != limit {
						t.Fatalf("REGISTER %d of %d contacts: %s, %d listed", r, len(batch), res.StartLine(), len(res.GetHeaders("Contact")))
					}
					check(s, fmt.Sprintf("after REGISTER %d", r))
				}

				// One 11-byte MESSAGE: at most one datagram per binding.
				message := func(s *server) int64 {
					t.Helper()
					datagrams.Store(0)
					b := newPhone(t, s, "bob", "UDP")
					if res := b.message("alice", "hello world"); res.StatusCode != 200 {
						t.Fatalf("MESSAGE: %s", res.StartLine())
					}
					time.Sleep(time.Second) // the other branches
					if transport == "UDP" {
						return datagrams.Load()
					}
					return int64(len(p.received()))
				}
				if n := message(s); n < 1 || n > int64(limit) {
					t.Fatalf("one MESSAGE made %d datagrams, limit %d", n, limit)
				}
				if transport != "UDP" {
					return // a connection's bindings die with the process
				}
				s.stop()
				s2 := start(t, cfg)
				p.sip.Target = s2.app.SIPAddr("UDP")
				check(s2, "after a restart")
				n := message(s2)
				t.Logf("after a restart: %d bindings in memory, one MESSAGE made %d datagrams", len(s2.app.bindings.Lookup("alice")), n)
				if n < 1 || n > int64(limit) {
					t.Fatalf("after a restart one MESSAGE made %d datagrams, limit %d", n, limit)
				}
			})
		}
	})
}

// contactCanary is a UDP socket that counts what reaches it and answers every
// request with 200: an address gchd must not, or must, send to.
type contactCanary struct {
	conns []net.PacketConn
	got   atomic.Int64
}

// newContactCanary listens on host at port (0: any) and, best effort, on the
// other loopback family at the same port, so that a name resolved either
// way is caught.
func newContactCanary(t *testing.T, hosts ...string) (*contactCanary, int) {
	t.Helper()
	c := &contactCanary{}
	port := 0
	for i, h := range hosts {
		pc, err := net.ListenPacket("udp", net.JoinHostPort(h, fmt.Sprint(port)))
		if err != nil {
			if i == 0 {
				t.Fatal(err)
			}
			continue
		}
		port = pc.LocalAddr().(*net.UDPAddr).Port
		c.conns = append(c.conns, pc)
		t.Cleanup(func() { pc.Close() })
		go c.serve(pc)
	}
	return c, port
}

func (c *contactCanary) serve(pc net.PacketConn) {
	buf := make([]byte, 65535)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		c.got.Add(1)
		msg, err := sip.ParseMessage(append([]byte(nil), buf[:n]...))
		if req, ok := msg.(*sip.Request); err == nil && ok {
			pc.WriteTo([]byte(sip.NewResponseFromRequest(req, 200, "OK", nil).String()), from)
		}
	}
}

// A UDP phone whose Contact names another host than the one its REGISTER
// came from (another address, a name, an address that is not the
// sender's) is reached through its flow: nothing goes to the named
// address, neither relayed requests nor group messages. A source in
// sip.trusted (an SBC) is believed.
func TestUDPContactCannotAimTraffic(t *testing.T) {
	cases := []struct {
		name    string
		hosts   []string // where the contactCanary listens
		contact string   // the Contact's host
		trusted bool
	}{
		{"another loopback address", []string{"127.0.0.2"}, "127.0.0.2", false},
		{"a host name", []string{"127.0.0.1", "::1"}, "localhost", false},
		{"a public address", nil, "203.0.113.9", false},
		{"trusted source, another address", []string{"127.0.0.2"}, "127.0.0.2", true},
		{"trusted source, a host name", []string{"127.0.0.1", "::1"}, "localhost", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startEngine(t, storage.SQLite, func(c *configs.Config) {
				if tc.trusted {
					c.SIP.Trusted = "127.0.0.0/8"
				}
			})
			s.addAccount("alice", "pw-alice", "")
			s.addAccount("bob", "pw-bob", "")
			can, port := &contactCanary{}, 5060
			if tc.hosts != nil {
				can, port = newContactCanary(t, tc.hosts...)
			}
			a := newPhone(t, s, "alice", "UDP", withContact(tc.contact, port))
			a.register()
			id := groupOf(t, s, "bob", "alice")
			s.must("alice", "joinGroup", map[string]any{"id": id})
			b := newPhone(t, s, "bob", "UDP")

			if res := b.message("alice", "relayed"); res.StatusCode != 200 {
				t.Fatalf("MESSAGE: %s", res.StartLine())
			}
			sendMID(t, s, "bob", map[string]any{"id": id, "mb": "group text"})
			if tc.trusted {
				// NG, the relayed MESSAGE and the group text.
				eventually(t, func() bool { return can.got.Load() >= 3 })
				time.Sleep(300 * time.Millisecond)
				if got := len(a.received()); got != 0 {
					t.Fatalf("the registering socket got %d requests; the trusted Contact should have", got)
				}
				return
			}
			// The group notification (NG) and text and the relayed MESSAGE
			// all reach the flow.
			deadline := time.Now().Add(10 * time.Second)
			for {
				got := strings.Join(bodies(a.received()), "|")
				if strings.Contains(got, "relayed") && strings.Contains(got, "group text") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the flow received %q", got)
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(300 * time.Millisecond)
			if n := can.got.Load(); n != 0 {
				t.Fatalf("%d datagrams went to the Contact %s:%d", n, tc.contact, port)
			}
		})
	}
}

// Over TCP a Contact naming another address is never dialled: everything
// goes down the connection the phone registered over.
func TestTCPContactCannotAimTraffic(t *testing.T) {
	s := startEngine(t, storage.SQLite)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var dialled atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			dialled.Add(1)
			c.Close()
		}
	}()
	port := l.Addr().(*net.TCPAddr).Port
	a := newPhone(t, s, "alice", "TCP", func(p *phone) {
		p.contact.Host, p.contact.Port = "127.0.0.2", port
	})
	a.register()
	b := newPhone(t, s, "bob", "UDP")
	if res := b.message("alice", "down the connection"); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	a.waitFor(1)
	if n := dialled.Load(); n != 0 {
		t.Fatalf("gchd dialled the Contact %d times", n)
	}
}

// The cost of one MESSAGE to a user whose contacts never answer (each
// transaction retransmits for 32 s), for docs/operations.md: run with
// GCHD_MEASURE_CONTACTS=1000 (the flood, refused) or =10 (the limit).
func TestContactDatagramsUnanswered(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GCHD_MEASURE_CONTACTS"))
	if n <= 0 {
		t.Skip("a 40 s measurement: set GCHD_MEASURE_CONTACTS to the number of Contacts")
	}
	cfg := testConfig(t, storage.SQLite)
	s := start(t, cfg)
	s.addAccount("alice", "pw-alice", "")
	s.addAccount("bob", "pw-bob", "")
	p := newPhone(t, s, "alice", "UDP")
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { silent.Close() })
	var got atomic.Int64
	go func() {
		buf := make([]byte, 65535)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	var contacts []string
	for i := range n {
		contacts = append(contacts, fmt.Sprintf("sip:c%d@127.0.0.1:%d", i, silent.LocalAddr().(*net.UDPAddr).Port))
	}
	res := p.send(withContacts(p.registerRequest(600), contacts))
	t.Logf("REGISTER with %d Contacts: %s, %d stored", n, res.StartLine(), storedBindings(t, s, "alice"))
	s.stop()
	s2 := start(t, cfg)
	t.Logf("after a restart: %d bindings", len(s2.app.bindings.Lookup("alice")))
	b := newPhone(t, s2, "bob", "UDP")
	go b.sendErr(b.messageRequest("alice", "hello world"))
	time.Sleep(40 * time.Second)
	t.Logf("one 11-byte MESSAGE: %d datagrams to the contacts in 40 s", got.Load())
}
