package app

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"gchd/internal/testkit/softphone"
)

// The real softphones of the test suite (baresip, linphonec) run through
// internal/testkit/softphone; these wrappers point them at a server of
// the harness and wait until it holds their registration.

// account is login's account on s over transport, as the harness makes
// them (password "pw-" + login).
func account(s *server, login, transport string) softphone.Account {
	return softphone.Account{Login: login, Password: "pw-" + login, Domain: testDomain, Transport: transport, Addr: s.app.SIPAddr(transport)}
}

// startBaresip starts baresip for login over transport and waits until
// gchd holds its registration.
func startBaresip(t *testing.T, s *server, login, transport string, opts ...softphone.BaresipOption) *softphone.Baresip {
	t.Helper()
	b := softphone.StartBaresip(t, account(s, login, transport), opts...)
	waitBinding(t, s, login, transport)
	return b
}

// startLinphonec starts linphonec for login over transport and waits until
// gchd holds its registration. autoAnswer answers calls at once.
func startLinphonec(t *testing.T, s *server, login, transport string, autoAnswer bool) *softphone.Linphonec {
	t.Helper()
	l := softphone.StartLinphonec(t, account(s, login, transport), autoAnswer)
	waitBinding(t, s, login, transport)
	return l
}

// waitBinding waits until gchd holds a binding of login over transport.
func waitBinding(t testing.TB, s *server, login, transport string) {
	t.Helper()
	deadline := time.Now().Add(softphone.Wait)
	for {
		for _, b := range s.app.bindings.Lookup(login) {
			if strings.EqualFold(b.Transport, transport) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has no %s binding in gchd: %v", login, transport, s.app.bindings.Lookup(login))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitNoBinding waits until gchd holds no binding of login.
func waitNoBinding(t testing.TB, s *server, login string) {
	t.Helper()
	deadline := time.Now().Add(softphone.Wait)
	for len(s.app.bindings.Lookup(login)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s is still registered: %v", login, s.app.bindings.Lookup(login))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// groupMessages lists a group's texts through the API, as "login: text".
func groupMessages(t *testing.T, s *server, login string, id uint32) []string {
	t.Helper()
	var hist struct {
		M []struct {
			K, L, DN, MB string
		}
	}
	s.must(login, "getMessages", map[string]any{"id": id, "limit": 200}).json(t, &hist)
	var out []string
	for _, m := range hist.M {
		if m.K == "MSG" {
			out = append(out, fmt.Sprintf("%s: %s", m.L, m.MB))
		}
	}
	return out
}

// waitGroupMessage waits until the group's history holds want.
func waitGroupMessage(t *testing.T, s *server, login string, id uint32, want string) {
	t.Helper()
	deadline := time.Now().Add(softphone.Wait)
	for {
		got := groupMessages(t, s, login, id)
		for _, m := range got {
			if m == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %d history %q lacks %q", id, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
