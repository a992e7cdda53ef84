package app

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
	"gchd/storage"
)

// phone is a SIP user agent built on sipgo (sipua) that registers with
// gchd and records what it receives.
type phone struct {
	t         testing.TB
	login     string
	password  string
	transport string // UDP, TCP, TLS, WS, WSS
	sip       *sipua.Phone
	ua        *sipgo.UserAgent
	cli       *sipgo.Client
	srv       *sipgo.Server
	contact   sip.Uri
	instance  string

	mu     sync.Mutex
	inbox  []*sip.Request
	notify chan struct{}
	answer int // status code answered to MESSAGE
	cseq   uint32
	callID string

	closeOnce sync.Once
}

type phoneOption func(*phone)

// withContact sets the Contact URI host, e.g. an unreachable private
// address that only the flow can reach.
func withContact(host string, port int) phoneOption {
	return func(p *phone) { p.contact.Host, p.contact.Port = host, port }
}

// withInstance registers as an RFC 5626 device instance.
func withInstance(urn string) phoneOption { return func(p *phone) { p.instance = urn } }

// withHandlers lets a test add request handlers before the phone serves.
func withHandlers(fn func(p *phone)) phoneOption { return fn }

// answering sets the status code the phone answers MESSAGEs with.
func answering(code int) phoneOption { return func(p *phone) { p.answer = code } }

// newPhone creates a phone of login talking to the server over transport.
func newPhone(t testing.TB, s *server, login, transport string, opts ...phoneOption) *phone {
	t.Helper()
	return newPhoneAt(t, s.app.SIPAddr(transport), login, transport, opts...)
}

// newRemotePhone creates a UDP phone of login for a server at addr.
func newRemotePhone(t testing.TB, login, addr string) *phone {
	t.Helper()
	return newPhoneAt(t, addr, login, "UDP")
}

func newPhoneAt(t testing.TB, server, login, transport string, opts ...phoneOption) *phone {
	t.Helper()
	p := &phone{t: t, login: login, password: testkit.Password(login), transport: transport,
		notify: make(chan struct{}, 1000), answer: 200, callID: fmt.Sprintf("%s-%d@test", login, time.Now().UnixNano())}
	var tlsConf *tls.Config
	if transport == "TLS" || transport == "WSS" {
		tlsConf = &tls.Config{InsecureSkipVerify: true}
	}
	sp, err := sipua.New(transport, server, sipua.WithName("test-"+login), sipua.WithTLS(tlsConf))
	if err != nil {
		t.Fatal(err)
	}
	p.sip, p.ua, p.cli, p.srv = sp, sp.UA, sp.Client, sp.Server
	t.Cleanup(p.close)
	p.contact = sip.Uri{Scheme: "sip", User: login, Host: "127.0.0.1"}
	if transport == "UDP" {
		if err := sp.ListenUDP("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		p.contact.Port = sp.Addr().Port
	} else {
		// A connection-oriented phone is reached only over its flow: its
		// Contact is unreachable, as a browser's is (RFC 7118).
		p.contact.Host = login + ".invalid"
		p.contact.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	}
	// Handlers are set before anything is served: sipgo reads its handler
	// map without a lock.
	p.srv.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.inbox = append(p.inbox, req)
		code := p.answer
		p.mu.Unlock()
		select {
		case p.notify <- struct{}{}:
		default:
		}
		tx.Respond(sip.NewResponseFromRequest(req, code, "Status", nil))
	})
	for _, o := range opts {
		o(p)
	}
	if sp.Conn != nil {
		if err := sp.ServeUDP(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// close stops the phone: its socket is gone, as a suspended phone app's is.
func (p *phone) close() { p.closeOnce.Do(p.sip.Close) }

// prepare addresses a request to gchd over the phone's transport.
func (p *phone) prepare(req *sip.Request) { p.sip.Prepare(req) }

// send sends a request and answers digest challenges with the phone's
// credentials.
func (p *phone) send(req *sip.Request) *sip.Response {
	p.t.Helper()
	res, err := p.sendErr(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", req.Method, req.Recipient.String(), err)
	}
	return res
}

func (p *phone) sendErr(req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.sip.Do(ctx, req, p.login, p.password)
}

func (p *phone) nextCSeq() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cseq++
	return p.cseq
}

// registerRequest builds a REGISTER of the phone's contact.
func (p *phone) registerRequest(expires int) *sip.Request {
	c := sip.ContactHeader{Address: p.contact}
	if p.instance != "" {
		c.Params = sip.HeaderParams{{K: "+sip.instance", V: `"` + p.instance + `"`}, {K: "reg-id", V: "1"}}
	}
	return sipua.RegisterRequest(sipua.Registration{Domain: testDomain, User: p.login, Contact: c,
		CallID: p.callID, CSeq: p.nextCSeq(), Expires: expires})
}

// register registers the phone and fails the test unless gchd says 200.
func (p *phone) register() *sip.Response {
	p.t.Helper()
	res := p.send(p.registerRequest(300))
	if res.StatusCode != 200 {
		p.t.Fatalf("REGISTER %s over %s: %s", p.login, p.transport, res.StartLine())
	}
	return res
}

// message sends a MESSAGE to a user (or group) of the domain.
func (p *phone) message(to, body string, extra ...sip.Header) *sip.Response {
	p.t.Helper()
	return p.send(p.messageRequest(to, body, extra...))
}

func (p *phone) messageRequest(to, body string, extra ...sip.Header) *sip.Request {
	target := sip.Uri{Scheme: "sip", User: to, Host: testDomain}
	req := sip.NewRequest(sip.MESSAGE, target)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.login, Host: testDomain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: target})
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain;charset=UTF-8"))
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.SetBody([]byte(body))
	return req
}

// received returns what the phone received so far.
func (p *phone) received() []*sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*sip.Request(nil), p.inbox...)
}

// waitFor waits until the phone has received n requests.
func (p *phone) waitFor(n int) []*sip.Request {
	p.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		if got := p.received(); len(got) >= n {
			return got
		}
		select {
		case <-p.notify:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			p.t.Fatalf("%s received %d requests, want %d", p.login, len(p.received()), n)
		}
	}
}

// bodies lists the bodies received.
func bodies(reqs []*sip.Request) []string {
	out := make([]string, len(reqs))
	for i, r := range reqs {
		out[i] = string(r.Body())
	}
	return out
}

// selfSigned writes a certificate and key for 127.0.0.1 and returns their paths.
func selfSigned(t testing.TB) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: testDomain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{testDomain, "localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// startSIP starts a server with every SIP transport on loopback.
func startSIP(t testing.TB, mutate ...func(*configs.Config)) *server {
	t.Helper()
	return startSIPOn(t, storage.SQLite, mutate...)
}

// startSIPOn is startSIP on a database of the engine.
func startSIPOn(t testing.TB, engine storage.Engine, mutate ...func(*configs.Config)) *server {
	t.Helper()
	cert, key := selfSigned(t)
	return startEngine(t, engine, append([]func(*configs.Config){func(c *configs.Config) {
		c.SIP.WSAddr = "127.0.0.1:0"
		c.SIP.TLSAddr = "127.0.0.1:0"
		c.SIP.WSSAddr = "127.0.0.1:0"
		c.TLS.Cert, c.TLS.Key = cert, key
	}}, mutate...)...)
}
