package cluster_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/internal/testkit"
	"gchd/internal/testkit/sipua"
)

// phone is one SIP device of a user, registered with one node, that
// records the MESSAGEs it receives.
type phone struct {
	t         *testing.T
	login     string
	transport string
	sip       *sipua.Phone
	contact   sip.Uri
	callID    string

	mu    sync.Mutex
	inbox []*sip.Request
	cseq  uint32
}

// newPhone makes login's device talking to node n over transport; more
// handlers may be set with setup before it serves.
func newPhone(t *testing.T, n *node, login, transport string, setup ...func(p *phone)) *phone {
	t.Helper()
	sp, err := sipua.New(transport, fmt.Sprintf("127.0.0.1:%d", n.sip), sipua.WithName("cluster-"+login))
	if err != nil {
		t.Fatal(err)
	}
	p := &phone{t: t, login: login, transport: transport, sip: sp, callID: fmt.Sprintf("%s-%d@cluster", login, time.Now().UnixNano())}
	t.Cleanup(sp.Close)
	p.contact = sip.Uri{Scheme: "sip", User: login, Host: "127.0.0.1"}
	if transport == "UDP" {
		if err := sp.ListenUDP("127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		p.contact.Port = sp.Addr().Port
	} else {
		// Reached over its flow only, as a phone behind NAT or a browser.
		p.contact.Host = login + ".invalid"
		p.contact.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	}
	sp.Server.OnMessage(func(req *sip.Request, tx sip.ServerTransaction) {
		p.mu.Lock()
		p.inbox = append(p.inbox, req)
		p.mu.Unlock()
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	for _, fn := range setup {
		fn(p)
	}
	if sp.Conn != nil {
		if err := sp.ServeUDP(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *phone) do(req *sip.Request) (*sip.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return p.sip.Do(ctx, req, p.login, testkit.Password(p.login))
}

// register registers the device for expires seconds.
func (p *phone) register() {
	p.t.Helper()
	p.mu.Lock()
	p.cseq++
	cseq := p.cseq
	p.mu.Unlock()
	res, err := p.do(sipua.RegisterRequest(sipua.Registration{Domain: domain, User: p.login,
		Contact: sip.ContactHeader{Address: p.contact}, CallID: p.callID, CSeq: cseq, Expires: 300}))
	if err != nil || res.StatusCode != 200 {
		p.t.Fatalf("REGISTER %s over %s: %v %v", p.login, p.transport, res, err)
	}
}

// message sends text to a user or group and returns the status.
func (p *phone) message(to, body string) int {
	p.t.Helper()
	target := sip.Uri{Scheme: "sip", User: to, Host: domain}
	req := sip.NewRequest(sip.MESSAGE, target)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.login, Host: domain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: target})
	req.AppendHeader(sip.NewHeader("Content-Type", "text/plain;charset=UTF-8"))
	req.SetBody([]byte(body))
	res, err := p.do(req)
	if err != nil {
		p.t.Fatalf("MESSAGE %s to %s: %v", p.login, to, err)
	}
	return res.StatusCode
}

// options sends an OPTIONS to a user and returns the status.
func (p *phone) options(to string) int {
	p.t.Helper()
	target := sip.Uri{Scheme: "sip", User: to, Host: domain}
	req := sip.NewRequest(sip.OPTIONS, target)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.login, Host: domain},
		Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: target})
	res, err := p.do(req)
	if err != nil {
		p.t.Fatalf("OPTIONS %s to %s: %v", p.login, to, err)
	}
	return res.StatusCode
}

func (p *phone) received() []*sip.Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*sip.Request(nil), p.inbox...)
}

// bodies returns the bodies received, in order.
func (p *phone) bodies() []string {
	var out []string
	for _, r := range p.received() {
		out = append(out, string(r.Body()))
	}
	return out
}

// has reports whether a MESSAGE with body arrived.
func (p *phone) has(body string) func() bool {
	return func() bool {
		for _, b := range p.bodies() {
			if b == body {
				return true
			}
		}
		return false
	}
}

// api calls the group chat API of node n as login and returns the body.
func api(t *testing.T, n *node, login, method, pm string) string {
	t.Helper()
	form := url.Values{"gm": {method}, "pm": {pm}}
	req, err := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/gch.ashx", n.http), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(login, testkit.Password(login))
	res, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("%s on %s: %v", method, n.name, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return strings.TrimSpace(string(b))
}

// groupID reads the id of addGroup's answer {"id":N}.
func groupID(t *testing.T, answer string) int {
	t.Helper()
	s := strings.TrimSuffix(strings.TrimPrefix(answer, `{"id":`), "}")
	id, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("addGroup answered %q", answer)
	}
	return id
}
