// Package sipua is the SIP user agent of gchd's tests and benchmark tools:
// a sipgo phone on one socket that serves the requests sent to it, the
// REGISTER it sends, and the digest answer to a server's challenge. The app
// tests, the robustness tests and bench/sip/sipload share it, so that a
// change in how gchd challenges is met in one place.
package sipua

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Phone is one sipgo user agent with a client and a server. Requests it
// sends go to one server address over one transport; on UDP they leave
// from the socket it serves on, so that answers and requests sent to its
// Contact come back to it.
type Phone struct {
	UA     *sipgo.UserAgent
	Client *sipgo.Client
	Server *sipgo.Server
	// Conn is the UDP socket the phone serves on, nil on other transports.
	// A test may wrap it before ServeUDP.
	Conn net.PacketConn
	// Transport (UDP, TCP, TLS, WS, WSS) and Target (host:port) are where
	// Prepare sends requests.
	Transport string
	Target    string
}

type options struct {
	name, hostname, clientHost string
	tls                        *tls.Config
	log                        *slog.Logger
}

// Option configures New.
type Option func(*options)

// WithName sets the User-Agent header.
func WithName(name string) Option { return func(o *options) { o.name = name } }

// WithHostname sets the host sipgo writes in From and Via when a request
// lacks one.
func WithHostname(host string) Option { return func(o *options) { o.hostname = host } }

// WithClientHost sets the host of the client's Via.
func WithClientHost(host string) Option { return func(o *options) { o.clientHost = host } }

// WithTLS sets the configuration of TLS and WSS connections.
func WithTLS(c *tls.Config) Option { return func(o *options) { o.tls = c } }

// WithLogger sets the logger of the phone's server side.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// New makes a phone that sends to target (host:port) over transport (UDP,
// TCP, TLS, WS, WSS). Open its socket (ListenUDP), set handlers on
// p.Server, then serve (ServeUDP, or a listener of your own).
func New(transport, target string, opts ...Option) (*Phone, error) {
	o := options{name: "gchd-test", hostname: "client.invalid", clientHost: "127.0.0.1"}
	for _, fn := range opts {
		fn(&o)
	}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent(o.name), sipgo.WithUserAgentHostname(o.hostname), sipgo.WithUserAgenTLSConfig(o.tls))
	if err != nil {
		return nil, fmt.Errorf("user agent: %w", err)
	}
	var srvOpts []sipgo.ServerOption
	if o.log != nil {
		srvOpts = append(srvOpts, sipgo.WithServerLogger(o.log))
	}
	srv, err := sipgo.NewServer(ua, srvOpts...)
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname(o.clientHost))
	if err != nil {
		ua.Close()
		return nil, fmt.Errorf("client: %w", err)
	}
	return &Phone{UA: ua, Client: cli, Server: srv, Transport: strings.ToUpper(transport), Target: target}, nil
}

// ListenUDP opens the phone's UDP socket on addr; ServeUDP serves it.
func (p *Phone) ListenUDP(addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	p.Conn = conn
	return nil
}

// ServeUDP serves the phone's UDP socket until Close, and returns once
// requests can leave from it. Call it after setting the handlers: sipgo
// reads its handler map without a lock.
func (p *Phone) ServeUDP() error {
	go p.Server.ServeUDP(p.Conn)
	// Serving puts the socket in sipgo's pool asynchronously; a request
	// sent from it before that would open another socket.
	for i := 0; ; i++ {
		if c, err := p.UA.TransportLayer().GetConnection("udp", p.Conn.LocalAddr().String()); err == nil {
			c.TryClose()
			return nil
		}
		if i == 1000 {
			return errors.New("UDP socket never became ready")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Addr is the address of the phone's UDP socket, nil on other transports.
func (p *Phone) Addr() *net.UDPAddr {
	if p.Conn == nil {
		return nil
	}
	return p.Conn.LocalAddr().(*net.UDPAddr)
}

// Close stops the phone: its socket is gone, as a suspended phone app's is.
func (p *Phone) Close() {
	p.UA.Close()
	if p.Conn != nil {
		p.Conn.Close()
	}
}

// Prepare addresses a request to the server over the phone's transport,
// from its UDP socket.
func (p *Phone) Prepare(req *sip.Request) {
	req.SetTransport(p.Transport)
	req.SetDestination(p.Target)
	if a := p.Addr(); a != nil {
		req.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	}
}

// Do sends req and, when the server challenges it (401 or 407), sends it
// again once with a digest answer of login and password.
func (p *Phone) Do(ctx context.Context, req *sip.Request, login, password string) (*sip.Response, error) {
	p.Prepare(req)
	res, err := p.Client.Do(ctx, req)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, errors.New("no response")
	}
	if res.StatusCode == 401 || res.StatusCode == 407 {
		req = req.Clone()
		p.Prepare(req)
		return p.Client.DoDigestAuth(ctx, req, res, sipgo.DigestAuth{Username: login, Password: password})
	}
	return res, nil
}
