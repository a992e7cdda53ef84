package sipserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"

	"gchd/registrar"
)

// accountsOf is an in-memory Accounts for the digest unit tests; the
// end-to-end tests use the real store.
type accountsOf map[string]registrar.Account

func (a accountsOf) Lookup(_ context.Context, login string) (registrar.Account, error) {
	if acc, ok := a[login]; ok {
		return acc, nil
	}
	return registrar.Account{}, registrar.ErrNoAccount
}

func newAccount(login, realm, password string) registrar.Account {
	return registrar.Account{Login: login, Realm: realm,
		HA1MD5:    registrar.HashHA1(registrar.MD5, login, realm, password),
		HA1SHA256: registrar.HashHA1(registrar.SHA256, login, realm, password)}
}

// signed builds a REGISTER that answers challenge chal as user/password.
func signed(t *testing.T, chal string, user, password string, nc int) *sip.Request {
	t.Helper()
	c, err := digest.ParseChallenge(chal)
	if err != nil {
		t.Fatal(err)
	}
	cred, err := digest.Digest(c, digest.Options{Method: "REGISTER", URI: "sip:example.org", Username: user, Password: password, Count: nc})
	if err != nil {
		t.Fatal(err)
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.org"})
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	return req
}

func TestDigest(t *testing.T) {
	ctx := context.Background()
	accounts := accountsOf{"alice": newAccount("alice", "example.org", "secret")}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	a, err := newDigestAuth("example.org", []byte("key"), time.Minute, []string{registrar.SHA256, registrar.MD5})
	if err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return now }
	chals := a.challenges(false, "UDP")
	if len(chals) != 2 {
		t.Fatalf("challenges = %v", chals)
	}
	for i, alg := range []string{"SHA-256", "MD5"} {
		c, _ := digest.ParseChallenge(chals[i])
		if c.Algorithm != alg || c.Realm != "example.org" || !c.SupportsQOP("auth") {
			t.Fatalf("challenge %d = %+v", i, c)
		}
	}

	// Over WebSocket MD5 comes last: JsSIP reads only the last challenge.
	if ws := a.challenges(false, "WS"); !strings.Contains(ws[len(ws)-1], "algorithm=MD5") || !strings.Contains(ws[0], "algorithm=SHA-256") {
		t.Fatalf("challenges over WS = %v", ws)
	}

	fail := func(req *sip.Request) *authFailure {
		t.Helper()
		_, err := a.verify(ctx, req, "Authorization", accounts)
		var f *authFailure
		if !errors.As(err, &f) {
			t.Fatalf("verify = %v, want an authFailure", err)
		}
		return f
	}

	// Both algorithms verify (the challenges share a nonce, so the second
	// use counts 2), and nonce-counts must grow.
	for i, chal := range chals {
		if _, err := a.verify(ctx, signed(t, chal, "alice", "secret", i+1), "Authorization", accounts); err != nil {
			t.Fatalf("good credentials: %v", err)
		}
	}
	chal := a.challenges(false, "UDP")[1]
	if _, err := a.verify(ctx, signed(t, chal, "alice", "secret", 1), "Authorization", accounts); err != nil {
		t.Fatal(err)
	}
	if f := fail(signed(t, chal, "alice", "secret", 1)); f.reason != "replay" {
		t.Fatalf("replayed nc: %+v", f)
	}
	if _, err := a.verify(ctx, signed(t, chal, "alice", "secret", 2), "Authorization", accounts); err != nil {
		t.Fatalf("next nc: %v", err)
	}

	// Wrong password and unknown user look alike.
	chal = a.challenges(false, "UDP")[1]
	if f := fail(signed(t, chal, "alice", "wrong", 1)); f.reason != "credentials" || f.stale {
		t.Fatalf("wrong password: %+v", f)
	}
	if f := fail(signed(t, chal, "mallory", "secret", 1)); f.reason != "credentials" || f.stale {
		t.Fatalf("unknown user: %+v", f)
	}

	// An expired nonce with the right password is stale; with a wrong one
	// it is simply wrong.
	chal = a.challenges(false, "UDP")[1]
	now = now.Add(2 * time.Minute)
	if f := fail(signed(t, chal, "alice", "secret", 1)); f.reason != "stale" || !f.stale {
		t.Fatalf("expired nonce: %+v", f)
	}
	if f := fail(signed(t, chal, "alice", "wrong", 1)); f.stale {
		t.Fatalf("expired nonce, wrong password: %+v", f)
	}

	// A nonce signed with another key, a foreign realm, no header.
	other, _ := newDigestAuth("example.org", []byte("other key"), time.Minute, []string{registrar.MD5})
	other.now = a.now
	if f := fail(signed(t, other.challenges(false, "UDP")[0], "alice", "secret", 1)); f.reason != "nonce" {
		t.Fatalf("forged nonce: %+v", f)
	}
	foreign, _ := newDigestAuth("evil.org", []byte("key"), time.Minute, []string{registrar.MD5})
	if f := fail(signed(t, foreign.challenges(false, "UDP")[0], "alice", "secret", 1)); f.reason != "realm" {
		t.Fatalf("foreign realm: %+v", f)
	}
	if f := fail(sip.NewRequest(sip.REGISTER, sip.Uri{Host: "example.org"})); f.reason != "missing" {
		t.Fatalf("no header: %+v", f)
	}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "example.org"})
	req.AppendHeader(sip.NewHeader("Authorization", `Digest garbage`))
	if f := fail(req); f.reason != "malformed" {
		t.Fatalf("garbage: %+v", f)
	}
}

func TestNonceSlotsAreBounded(t *testing.T) {
	a, _ := newDigestAuth("r", nil, time.Minute, []string{registrar.MD5})
	first := a.challenges(false, "UDP")[0]
	for i := 0; i < ncSlots; i++ {
		a.newNonce()
	}
	accounts := accountsOf{"u": newAccount("u", "r", "p")}
	c, _ := digest.ParseChallenge(first)
	cred, _ := digest.Digest(c, digest.Options{Method: "REGISTER", URI: "sip:r", Username: "u", Password: "p", Count: 1})
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "r"})
	req.AppendHeader(sip.NewHeader("Authorization", cred.String()))
	_, err := a.verify(context.Background(), req, "Authorization", accounts)
	var f *authFailure
	if !errors.As(err, &f) || !f.stale {
		t.Fatalf("a nonce whose slot was reused: %v, want stale", err)
	}
	if got := fmt.Sprint(len(a.slots)); got != fmt.Sprint(ncSlots) {
		t.Fatalf("slots grew to %s", got)
	}
}
