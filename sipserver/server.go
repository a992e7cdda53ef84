// Package sipserver is gchd's SIP face, built on sipgo, in three parts
// built in this order: the Stack (stack.go: the transports UDP, TCP, TLS,
// WS, WSS, the router and the flow tokens), the Sender (sender.go: group
// notifications and messages, a chat.Deliverer) and the Server (digest
// authentication, the registrar front end, the stateful proxy between
// registered users in proxy.go and fork.go, the group addresses in
// group.go). It holds no chat rules and no SQL: it consumes the small
// interfaces below.
package sipserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/limits"
	"gchd/registrar"
	"gchd/sipserver/internal/ingress"
)

// Registrar is the location service the server consumes.
type Registrar interface {
	Register(ctx context.Context, r registrar.RegisterRequest) (registrar.RegisterResult, error)
	Lookup(aor string) []registrar.Binding
	LookupAll(aor string) []registrar.Binding
	LookupURI(uri string) (registrar.Binding, bool)
	MarkAsleep(aor, key string, updated time.Time) bool
	FlowClosed(transport, source string)
	Policy() registrar.Policy
}

// Accounts finds the credentials of a login.
type Accounts interface {
	Lookup(ctx context.Context, login string) (registrar.Account, error)
}

// Options configure the server.
type Options struct {
	Domain string // the SIP domain and digest realm
	// Advertise is the host put in Via and Record-Route; empty: the listen
	// IP, or the domain when listening on every address.
	Advertise string
	// Aliases are other host names or IPs under which requests reach us.
	Aliases []string
	Addr    string // UDP and TCP; empty: off
	WSAddr  string
	TLSAddr string
	WSSAddr string
	TLS     *tls.Config // for TLS and WSS
	// UDPReadBuffer is the socket receive buffer: bursts of UDP overflow the
	// kernel's default long before the CPU is busy.
	UDPReadBuffer int
	// DigestAlgorithms lists the challenges offered, most preferred first.
	DigestAlgorithms []string
	NonceLifetime    time.Duration
	// Trusted lists source networks whose requests are not challenged (an
	// application server or SBC in front of gchd).
	Trusted []netip.Prefix
	// InviteTimeout cancels an INVITE nobody answered (RFC 3261 Timer C).
	InviteTimeout time.Duration
	// IdleTimeout closes TCP/TLS/WS connections silent for that long.
	IdleTimeout time.Duration
	// TransactionLinger is Timer J (RFC 3261 17.2.2): how long the final
	// answer to a non-INVITE request over UDP is kept to answer its
	// retransmissions; 0: 64*T1.
	TransactionLinger time.Duration
	// Secret signs nonces; nodes sharing a database share it.
	Secret []byte
	// Peer, when set, reports whether address (ip:port) is another gchd
	// node's: the only place gchd opens a TCP connection to, for a request
	// handed over that is too large for a datagram.
	Peer func(address string) bool
	// Guards are the abuse limits; nil fields are off.
	Guards Guards
	// Mirror, if not nil, gets a copy of every message read and written
	// (trace.hep_addr).
	Mirror Mirror
	// Pusher, if not nil, wakes devices registered with push parameters
	// that do not answer (push.gateway_url).
	Pusher Pusher
	// AnswerWait is how long a delivery to a device with push parameters
	// waits for its answer before the device counts as asleep and is sent
	// a push.
	AnswerWait time.Duration
}

// Guards are the limits that protect the server from abuse, per source
// address (and account for logins). Sources in Trusted pass them all.
type Guards struct {
	Rate        *limits.Rate     // SIP messages per source
	AuthSource  *limits.Failures // failed logins per source
	AuthAccount *limits.Failures // failed logins per account
	Conns       *limits.Conns    // concurrent connections per source
}

// Server answers SIP requests over its stack: the registrar front end,
// the proxy between registered users and the group addresses.
type Server struct {
	*Stack
	accounts     Accounts
	auth         *digestAuth
	chat         Chat
	send         *Sender
	onRegistered func(login string) // nil: nobody is told
	pusher       Pusher             // nil: no pushes

	in *ingress.Ingress // REGISTERs beside sipgo, and every answer sent

	typing *limits.Rate // typing notices per sender and group
	tasks  *tasks       // goroutines the server starts on its own
}

// Config is what the server is built with besides its stack.
type Config struct {
	Accounts Accounts
	// Chat takes the MESSAGEs to group addresses and keeps those to users
	// without a reachable device.
	Chat Chat
	// Sender writes the MESSAGEs the server sends on its own: answers to
	// commands, typing notices.
	Sender *Sender
	// Registered, if not nil, is called after a REGISTER added a binding
	// or changed its flow: the user may have become reachable.
	Registered func(login string)
}

// New builds the server over a stack and adds its handlers to it.
func New(st *Stack, c Config) (*Server, error) {
	if c.Accounts == nil || c.Chat == nil || c.Sender == nil {
		return nil, errors.New("sip server: accounts, chat and sender are required")
	}
	s := &Server{
		Stack: st, accounts: c.Accounts, chat: c.Chat, send: c.Sender, onRegistered: c.Registered, pusher: st.opts.Pusher,
		typing: limits.NewRate(typingRate, typingBurst),
		tasks:  newTasks(),
	}
	var err error
	if s.auth, err = newDigestAuth(st.opts.Domain, st.opts.Secret, st.opts.NonceLifetime, st.opts.DigestAlgorithms); err != nil {
		return nil, err
	}
	s.in = ingress.New((*registerHandler)(s), st.udp, ingress.Options{Linger: st.opts.TransactionLinger,
		Rate: st.opts.Guards.Rate, RateKey: st.rateKey, Mirror: st.opts.Mirror, Metrics: st.metrics, Log: st.log})
	s.srv.OnRegister(s.handle(s.onRegister))
	s.srv.OnOptions(s.handle(s.onOptions))
	s.srv.OnAck(s.onAck)
	s.srv.OnCancel(s.handle(s.onCancel))
	s.srv.OnNoRoute(s.handle(s.onProxy))
	for _, m := range []sip.RequestMethod{sip.INVITE, sip.BYE, sip.MESSAGE, sip.INFO, sip.PRACK, sip.UPDATE,
		sip.SUBSCRIBE, sip.NOTIFY, sip.REFER, sip.PUBLISH} {
		s.srv.OnRequest(m, s.handle(s.onProxy))
	}
	return s, nil
}

// Serve serves every listener until ctx is done, then stops the user agent.
// In-flight transactions get until stopCtx ends to finish.
func (s *Server) Serve(ctx context.Context) error {
	errs := make(chan error, 1+len(s.listeners))
	var wg sync.WaitGroup
	serve := func(name string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil && !errors.Is(err, net.ErrClosed) && ctx.Err() == nil {
				errs <- fmt.Errorf("sip %s: %w", name, err)
			}
		}()
	}
	s.in.Start()
	if s.udp != nil {
		udp := s.in.UDP(s.ua.TransportLayer())
		serve("udp", func() error {
			for {
				err := s.srv.ServeUDP(udp)
				if !udp.AfterRecycle() {
					return err
				}
			}
		})
	}
	for transport, ln := range s.listeners {
		switch transport {
		case "TCP":
			in := s.in.Listener(ln, transport)
			serve("tcp", func() error { return s.srv.ServeTCP(in) })
		case "TLS":
			in := s.in.Listener(ln, transport)
			serve("tls", func() error { return s.srv.ServeTLS(in) })
		case "WS", "WSS":
			// A WSS listener terminates TLS itself and sipgo's WS
			// transport carries the WebSocket inside it. sipgo's WSS
			// transport would dial a request's Via host with a dialer of
			// its own whenever the client hung up before its answer, and
			// no option reaches that dialer; its WS transport dials only
			// through noWSDialer, which refuses. Flows on this port are
			// thus WS to the registrar and the proxy: the same connection
			// either way.
			if s.opts.Mirror != nil {
				ln = wsMirrorListener{Listener: ln, s: s}
			}
			serve(strings.ToLower(transport), func() error { return s.srv.ServeWS(ln) })
		}
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errs:
	}
	s.closeListeners()
	wg.Wait()
	// After the UDP reader, sipgo's loop, returned. Connections still open
	// leave what they read to sipgo from now on.
	s.in.Stop()
	return err
}

// Close stops what the server started on its own (branch watchers,
// CANCELs) and waits for it. The stack is closed after it, by its owner.
func (s *Server) Close() error {
	s.tasks.Stop()
	return nil
}
