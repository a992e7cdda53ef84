package app

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/registrar"
	"gchd/storage"
)

// gchd registrations lists what the running server registered, every
// column of it, and gchd registrations del removes it: within
// registrar.RemovalPoll the server stops sending to the removed contact,
// and a MESSAGE for the user waits until a phone registers again.
func TestRegistrationsCommand(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine, func(c *configs.Config) {
			c.Registrar.Node = "node-a"
			c.Registrar.RefreshWrite = time.Second
		})
		s.addAccount("ann", "pw-ann", "")
		s.addAccount("bob", "pw-bob", "")
		const urn = "urn:uuid:0d6bbd4e-9a6c-4c1e-8d2b-6a1e6b2a5f01"
		ann := newPhone(t, s, "ann", "UDP", withInstance("<"+urn+">"))
		req := ann.registerRequest(300)
		req.AppendHeader(sip.NewHeader("User-Agent", "test-ann/1.0"))
		if res := ann.send(req); res.StatusCode != 200 {
			t.Fatalf("REGISTER: %s", res.StartLine())
		}
		bob := newPhone(t, s, "bob", "TCP")
		bob.register()
		env := map[string]string{"GCHD_DATABASE": s.cfg.Database, "GCHD_DOMAIN": testDomain}

		code, out, errOut := run(t, "", env, "registrations")
		if code != 0 {
			t.Fatalf("registrations: exit %d %q", code, errOut)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || !strings.HasPrefix(lines[0], "LOGIN") {
			t.Fatalf("registrations:\n%s", out)
		}
		src := ann.sip.Conn.LocalAddr().String()
		fields := strings.Fields(lines[1])
		// LOGIN CONTACT TRANSPORT SOURCE EXPIRES INSTANCE USER AGENT NODE
		if len(fields) != 8 || fields[0] != "ann" || fields[1] != ann.contact.String() || fields[2] != "UDP" ||
			fields[3] != src || (fields[4] != "300s" && fields[4] != "299s") || !strings.Contains(fields[5], urn) ||
			fields[6] != "test-ann/1.0" || fields[7] != "node-a" {
			t.Fatalf("ann's row %q", lines[1])
		}
		if !strings.HasPrefix(lines[2], "bob ") || !strings.Contains(lines[2], " TCP ") {
			t.Fatalf("bob's row %q", lines[2])
		}
		code, out, _ = run(t, "", env, "registrations", "ann", "-json")
		var list []registrationJSON
		if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list) != 1 {
			t.Fatalf("registrations ann -json: exit %d, %v:\n%s", code, err, out)
		}
		if r := list[0]; r.Login != "ann" || r.Contact != ann.contact.String() || r.Source != src || r.Transport != "UDP" ||
			r.ExpiresIn < 295 || r.UserAgent != "test-ann/1.0" || r.Node != "node-a" || !strings.Contains(r.Instance, urn) || r.CallID != ann.callID {
			t.Fatalf("ann as JSON: %+v", r)
		}

		// Bad input is refused and removes nothing.
		for _, args := range [][]string{{"registrations", "del"}, {"registrations", "del", "a b"}, {"registrations", "x", "y"}} {
			if code, _, _ := run(t, "", env, args...); code != 2 {
				t.Errorf("%v: exit %d, want 2", args, code)
			}
		}
		if code, _, errOut := run(t, "", env, "registrations", "del", "ann", "sip:nobody@127.0.0.1"); code != 1 || !strings.Contains(errOut, "no registration") {
			t.Errorf("del of an unknown contact: exit %d %q", code, errOut)
		}

		// Delivered while registered.
		if res := bob.message("ann", "before"); res.StatusCode != 200 {
			t.Fatalf("MESSAGE before del: %s", res.StartLine())
		}
		ann.waitFor(1)
		// A refresh just before the removal, which the registrar
		// writes behind: it must not bring the binding back.
		ann.register()
		code, out, errOut = run(t, "", env, "registrations", "del", "ann", ann.contact.String())
		if code != 0 || !strings.Contains(out, "removed ann "+ann.contact.String()) {
			t.Fatalf("del: exit %d %q %q", code, out, errOut)
		}
		if _, out, _ := run(t, "", env, "registrations", "ann"); strings.Contains(out, src) {
			t.Fatalf("listed after del:\n%s", out)
		}
		// The server forgets the binding within the removal poll.
		deadline := time.Now().Add(registrar.RemovalPoll + 2*time.Second)
		for len(s.app.bindings.Lookup("ann")) > 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the server still uses the removed binding after %v", registrar.RemovalPoll+2*time.Second)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if res := bob.message("ann", "after"); res.StatusCode != 202 {
			t.Fatalf("MESSAGE after del: %s, want 202 (stored for later)", res.StartLine())
		}
		time.Sleep(300 * time.Millisecond)
		if got := bodies(ann.received()); len(got) != 1 {
			t.Fatalf("the removed contact received %q", got)
		}
		// The binding stays gone past the registrar's write-behind
		// (refresh_write): nothing writes it back.
		time.Sleep(s.cfg.Registrar.RefreshWrite + time.Second)
		if _, out, _ := run(t, "", env, "registrations", "ann"); strings.Contains(out, src) {
			t.Fatalf("the binding came back:\n%s", out)
		}
		// Registering again brings the waiting message.
		ann.register()
		if got := bodies(ann.waitFor(2)); got[1] != "after" {
			t.Fatalf("after registering again: %q", got)
		}
		// del LOGIN removes every binding of the login.
		code, out, _ = run(t, "", env, "registrations", "del", "bob")
		if code != 0 || !strings.Contains(out, "removed bob ") {
			t.Fatalf("del bob: %d %q", code, out)
		}
		if code, _, errOut := run(t, "", env, "registrations", "del", "bob"); code != 1 || !strings.Contains(errOut, "no registrations") {
			t.Fatalf("del bob again: %d %q", code, errOut)
		}
	})
}
