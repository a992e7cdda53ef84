package sipserver

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"

	"gchd/metrics"
	"gchd/registrar"
	"gchd/sipserver/internal/ingress"
)

// Stack is the SIP transport: every bound listener and the sipgo user
// agent, server and client over them. The Sender writes through it, the
// Server answers through it; it is built first, so that a port in use is
// reported before anything else starts.
type Stack struct {
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics
	reg     Registrar
	flows   flowSigner // Record-Route and branch tokens
	route   router

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	cli *sipgo.Client

	udp       net.PacketConn
	listeners map[string]net.Listener // by transport: TCP, TLS, WS, WSS
	ports     map[string]int          // by transport
	hosts     map[string]bool         // names and IPs that are us

	closeOnce sync.Once
	closeErr  error
}

// configureStack sets sipgo's process-wide knobs. They are package globals
// of sipgo, read without synchronisation, so they are set once, before the
// first user agent exists.
var configureStack = sync.OnceFunc(func() {
	// Up to the parser's limit: a UDP datagram or WS frame over sipgo's
	// default 32 KiB buffer would be cut and dropped.
	sip.TransportBufferReadSize = 65535
	// A MESSAGE over UDP may be larger than the path MTU: let IP fragment it
	// rather than refuse it (phones registered over UDP have no other flow).
	sip.UDPMTUSize = 65535
	// sipgo logs a parse failure at ERROR with the whole datagram: on an
	// open port that is an attacker-sized log. Its logs go to debug.
	sip.SetDefaultLogger(slog.New(quietHandler{}))
})

// Listen binds every listener and builds the sipgo stack over them.
func Listen(opts Options, reg Registrar, m *metrics.Metrics, log *slog.Logger) (*Stack, error) {
	configureStack()
	if opts.TransactionLinger <= 0 {
		opts.TransactionLinger = sip.Timer_J // 64*T1
	}
	if len(opts.DigestAlgorithms) == 0 {
		// MD5 alone, as Kamailio and Asterisk offer by default: some
		// clients (baresip 1.0) fail on any challenge they cannot answer.
		opts.DigestAlgorithms = []string{registrar.MD5}
	}
	if opts.NonceLifetime <= 0 {
		opts.NonceLifetime = 5 * time.Minute
	}
	if opts.InviteTimeout <= 0 {
		opts.InviteTimeout = 3 * time.Minute
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.AnswerWait <= 0 {
		opts.AnswerWait = time.Second
	}
	if len(opts.Secret) == 0 {
		opts.Secret = make([]byte, 32)
		if _, err := rand.Read(opts.Secret); err != nil {
			return nil, fmt.Errorf("sip secret: %w", err)
		}
	}
	s := &Stack{opts: opts, log: log, metrics: m, reg: reg, flows: flowSigner{secret: opts.Secret},
		listeners: map[string]net.Listener{}, ports: map[string]int{}, hosts: map[string]bool{}}
	s.route = router{reg: reg, flows: s.flows, local: s.isUs, ours: s.isOurDomain, alive: s.flowAlive}
	if err := s.bind(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if err := s.buildStack(); err != nil {
		s.closeListeners()
		return nil, err
	}
	return s, nil
}

// bind opens every configured listener.
func (s *Stack) bind() error {
	if s.opts.Addr != "" {
		udp, tcp, err := listenUDPAndTCP(s.opts.Addr)
		if err != nil {
			return fmt.Errorf("sip.addr: %w", err)
		}
		if s.opts.UDPReadBuffer > 0 {
			if uc, ok := udp.(*net.UDPConn); ok {
				s.setUDPReadBuffer(uc)
			}
		}
		s.udp = udp
		s.addListener("TCP", tcp)
		s.ports["UDP"] = udp.LocalAddr().(*net.UDPAddr).Port
	}
	for _, l := range []struct{ transport, addr, setting string }{
		{"WS", s.opts.WSAddr, "sip.ws_addr"},
		{"TLS", s.opts.TLSAddr, "sip.tls_addr"},
		{"WSS", s.opts.WSSAddr, "sip.wss_addr"},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fmt.Errorf("%s: %w", l.setting, err)
		}
		s.addListener(l.transport, ln)
	}
	s.hosts[strings.ToLower(s.opts.Domain)] = true
	for _, a := range s.opts.Aliases {
		s.hosts[strings.ToLower(a)] = true
	}
	if s.opts.Advertise != "" {
		s.hosts[strings.ToLower(s.opts.Advertise)] = true
	}
	for _, addr := range []string{s.opts.Addr, s.opts.WSAddr, s.opts.TLSAddr, s.opts.WSSAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		ip := net.ParseIP(host)
		if host != "" && (ip == nil || !ip.IsUnspecified()) {
			s.hosts[strings.ToLower(host)] = true
			continue
		}
		// Listening on every address: each interface address is us.
		if ifaddrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range ifaddrs {
				if ipn, ok := a.(*net.IPNet); ok {
					s.hosts[ipn.IP.String()] = true
				}
			}
		}
	}
	if s.opts.Advertise == "" {
		s.opts.Advertise = s.opts.Domain
		if host, _, err := net.SplitHostPort(s.opts.Addr); err == nil {
			if ip := net.ParseIP(host); ip != nil && !ip.IsUnspecified() {
				s.opts.Advertise = host
			}
		}
	}
	return nil
}

// addListener registers a stream listener wrapped so that closed
// connections are reported (their bindings become unreachable) and each
// source's connections are capped.
func (s *Stack) addListener(transport string, ln net.Listener) {
	s.ports[transport] = ln.Addr().(*net.TCPAddr).Port
	if s.opts.Guards.Conns != nil {
		ln = s.opts.Guards.Conns.Listener(ln, func() { s.metrics.LimitRejected("connections") })
	}
	flow := transport
	if transport == "WSS" {
		flow = "WS" // see Serve: sipgo's WS transport carries these connections
	}
	var wrapped net.Listener = &flowListener{Listener: ln, onClose: func(raddr string) { s.reg.FlowClosed(flow, raddr) }}
	if transport == "TLS" || transport == "WSS" {
		s.listeners[transport] = tls.NewListener(wrapped, s.opts.TLS)
		return
	}
	s.listeners[transport] = wrapped
}

// listenUDPAndTCP binds UDP and TCP on the same port; with port 0 it finds a
// port free for both.
func listenUDPAndTCP(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		p := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, p))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		if port != "0" || attempt == 20 {
			return nil, nil, err
		}
	}
}

func (s *Stack) closeListeners() {
	if s.udp != nil {
		s.udp.Close()
	}
	for _, ln := range s.listeners {
		ln.Close()
	}
}

// buildStack creates the sipgo user agent, server and client; the Server
// adds its handlers.
func (s *Stack) buildStack() error {
	var err error
	s.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("gchd"),
		sipgo.WithUserAgentHostname(s.opts.Domain),
		sipgo.WithUserAgentTransactionLayerOptions(
			// A request pending on a connection that closed fails at once
			// instead of after Timer B.
			sip.WithTransactionLayerTerminateOnConnClose(),
			// 2xx retransmissions of a forwarded INVITE that arrive after
			// the client transaction ended are relayed statelessly (RFC 6026).
			sip.WithTransactionLayerUnhandledResponseHandler(s.relayStray),
		),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerReadFilter(s.rateFilter),
			sip.WithTransportLayerTransports(sip.TransportsConfig{
				TCP: &sip.TransportTCP{ReadTimeout: s.opts.IdleTimeout, WriteTimeout: ingress.StreamWriteTimeout, DialerCreate: s.peerDialer},
				TLS: &sip.TransportTLS{TransportTCP: &sip.TransportTCP{ReadTimeout: s.opts.IdleTimeout, WriteTimeout: ingress.StreamWriteTimeout, DialerCreate: noDialer}},
				WS:  &sip.TransportWS{ReadTimeout: s.opts.IdleTimeout, WriteTimeout: ingress.StreamWriteTimeout, DialerCreate: noWSDialer},
				WSS: &sip.TransportWSS{TransportWS: &sip.TransportWS{ReadTimeout: s.opts.IdleTimeout, WriteTimeout: ingress.StreamWriteTimeout}},
			}),
		),
		sipgo.WithUserAgenTLSConfig(s.opts.TLS),
	)
	if err != nil {
		return fmt.Errorf("sip user agent: %w", err)
	}
	s.srv, err = sipgo.NewServer(s.ua, sipgo.WithServerLogger(slog.New(quietHandler{})))
	if err != nil {
		return fmt.Errorf("sip server: %w", err)
	}
	s.cli, err = sipgo.NewClient(s.ua, sipgo.WithClientHostname(s.opts.Advertise))
	if err != nil {
		return fmt.Errorf("sip client: %w", err)
	}
	return nil
}

// errNoDial refuses every connection sipgo would open but those to the
// other nodes (peerDialer). gchd speaks to phones over
// TCP, TLS and WS only on connections the other side opened (its flows):
// a reliable binding is reached over its connection or not at all
// (targetOf), and an answer goes on the connection its request came on or
// is dropped. sipgo's transaction layer, when that connection is already
// gone as the answer is about to be sent, dials the host the request's
// top Via names (or its received=): a client that sends a request naming
// any host:port and hangs up at once made gchd connect there and write
// its answer, a port scanner for anyone and a descriptor per target.
var errNoDial = errors.New("gchd opens no connections: answers and requests go over the flows the other side opened")

// noDialer is sipgo's TCP and TLS dialer: its Control refuses the socket
// before connect, so no SYN leaves.
func noDialer(laddr net.Addr) net.Dialer {
	return net.Dialer{Timeout: 3 * time.Second, LocalAddr: laddr,
		Control: func(string, string, syscall.RawConn) error { return errNoDial }}
}

// peerDialer is sipgo's TCP dialer: it refuses like noDialer, but for the
// addresses of the other nodes (Options.Peer).
func (s *Stack) peerDialer(laddr net.Addr) net.Dialer {
	d := noDialer(laddr)
	if s.opts.Peer == nil {
		return d
	}
	d.LocalAddr = nil // an ephemeral port: the listening one is taken
	d.Control = func(_, address string, _ syscall.RawConn) error {
		if s.opts.Peer(address) {
			return nil
		}
		return errNoDial
	}
	return d
}

// noWSDialer is sipgo's WS dialer, refusing like noDialer. sipgo's WSS
// transport dials with a net.Dialer of its own that no option reaches
// (docs/operations.md, Security).
func noWSDialer(net.Addr) ws.Dialer {
	return ws.Dialer{NetDial: func(context.Context, string, string) (net.Conn, error) { return nil, errNoDial }}
}

// Addr returns the bound address of a transport (UDP, TCP, TLS, WS, WSS).
func (s *Stack) Addr(transport string) string {
	if transport == "UDP" {
		if s.udp == nil {
			return ""
		}
		return s.udp.LocalAddr().String()
	}
	if ln, ok := s.listeners[transport]; ok {
		return ln.Addr().String()
	}
	return ""
}

// UDPPoolSize returns how many addresses sipgo's UDP connection pool
// holds: bounded by the recycling of its read loop (ingress.go).
func (s *Stack) UDPPoolSize() int {
	if p := s.ua.TransportLayer().Pool("udp"); p != nil {
		return p.Size()
	}
	return 0
}

// Close releases the user agent, its connections and transactions, and
// the listeners. The Server and the Sender that use the stack are closed
// before it.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		s.closeListeners()
		if s.ua != nil {
			s.closeErr = s.ua.Close()
		}
	})
	return s.closeErr
}

// isUs reports whether a URI's host (and port, when given) is this server.
func (s *Stack) isUs(u sip.Uri) bool {
	if !s.isOurDomain(u.Host) {
		return false
	}
	if u.Port == 0 {
		return true
	}
	for _, p := range s.ports {
		if p == u.Port {
			return true
		}
	}
	return false
}

// isOurDomain reports whether a host is our domain, an alias or one of our
// addresses: users there are ours.
func (s *Stack) isOurDomain(host string) bool {
	host = strings.ToLower(strings.Trim(host, "[]"))
	if s.hosts[host] {
		return true
	}
	if ip := net.ParseIP(host); ip != nil {
		return s.hosts[ip.String()]
	}
	return false
}

// trusted reports whether a request's source is in a trusted network.
func (s *Stack) trusted(req *sip.Request) bool {
	if len(s.opts.Trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return false
	}
	return s.trustedIP(ap.Addr())
}

func (s *Stack) trustedIP(ip netip.Addr) bool {
	for _, p := range s.opts.Trusted {
		if p.Contains(ip.Unmap()) {
			return true
		}
	}
	return false
}

// rateFilter drops what a source sends over its rate, before parsing: like
// Kamailio's pike, a flood costs little. A datagram is dropped; a
// connection is closed (its stream cannot go on with a piece missing).
// sipgo calls it per read: a datagram or a WebSocket message is one SIP
// message, but a TCP or TLS read may hold many, so the connections the
// stream ingress accepted are counted there, per message framed.
func (s *Stack) rateFilter(p sip.TransportReadProps, data []byte) ([]byte, error) {
	s.mirrorRead(p.Transport, p.LocalAddr, p.RemoteAddr, data)
	r := s.opts.Guards.Rate
	if r == nil || p.RemoteAddr == nil {
		return data, nil
	}
	if t := strings.ToUpper(p.Transport); t == "TCP" || t == "TLS" {
		if la, ok := p.LocalAddr.(*net.TCPAddr); ok && la.Port == s.ports[t] {
			return data, nil
		}
	}
	key, limited := s.rateKey(p.RemoteAddr)
	if !limited || r.Allow(key) {
		return data, nil
	}
	s.metrics.LimitRejected("sip_rate")
	if strings.EqualFold(p.Transport, "udp") {
		return nil, nil
	}
	return nil, ingress.ErrRateLimited
}
