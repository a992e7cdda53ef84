package app

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gchd/configs"
)

// startLogged runs a server with cfg that logs to log, as start does.
func startLogged(t *testing.T, cfg configs.Config, log *slog.Logger) *server {
	t.Helper()
	return startWith(t, cfg, log, nil)
}

// At debug level every SIP request and every answer has a line with its
// method, Call-ID, From, To, source and status; no password, digest
// response or message text ever reaches the log.
func TestSIPDebugLog(t *testing.T) {
	var out syncBuffer
	log, _ := newLogger(configs.Log{Level: "debug", Format: "text"}, &out)
	s := startLogged(t, testConfig(t, "sqlite"), log)
	s.addAccount("ann", "secret-ann-pw", "")
	s.addAccount("bob", "secret-bob-pw", "")
	ann := newPhone(t, s, "ann", "UDP")
	ann.password = "secret-ann-pw"
	bob := newPhone(t, s, "bob", "TCP")
	bob.password = "secret-bob-pw"
	ann.register()
	bob.register()
	const text = "the body text that stays out of the log"
	if res := ann.message("bob", text); res.StatusCode != 200 {
		t.Fatalf("MESSAGE: %s", res.StartLine())
	}
	bob.waitFor(1)

	src := ann.sip.Conn.LocalAddr().String()
	want := []string{
		fmt.Sprintf(`msg="sip request" part=sip method=REGISTER call_id=%s from=ann@test.local to=ann@test.local source=%s transport=UDP`, ann.callID, src),
		fmt.Sprintf(`msg="sip answer" part=sip status=401 reason=Unauthorized method=REGISTER call_id=%s from=ann@test.local to=ann@test.local destination=%s`, ann.callID, src),
		fmt.Sprintf(`msg="sip answer" part=sip status=200 reason=OK method=REGISTER call_id=%s from=ann@test.local to=ann@test.local destination=%s`, ann.callID, src),
		fmt.Sprintf(`msg="sip request" part=sip method=REGISTER call_id=%s from=bob@test.local to=bob@test.local`, bob.callID),
		`msg="sip request" part=sip method=MESSAGE call_id=`,
		`from=ann@test.local to=bob@test.local source=` + src,
		`msg="sip request sent" part=sip method=MESSAGE call_id=`,
		`msg="sip answer" part=sip status=200 reason=Status method=MESSAGE`,
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, w := range want {
		for !strings.Contains(out.String(), w) {
			if time.Now().After(deadline) {
				t.Fatalf("the log lacks %q:\n%s", w, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	got := out.String()
	for _, bad := range []string{"secret-ann-pw", "secret-bob-pw", "response=", "Digest ", "Authorization", text} {
		if strings.Contains(got, bad) {
			t.Errorf("the log holds %q:\n%s", bad, got)
		}
	}
	// At info level nothing of SIP traffic is logged.
	var quiet syncBuffer
	log, _ = newLogger(configs.Log{Level: "info", Format: "text"}, &quiet)
	s2 := startLogged(t, testConfig(t, "sqlite"), log)
	s2.addAccount("ann", "secret-ann-pw", "")
	p := newPhone(t, s2, "ann", "UDP")
	p.password = "secret-ann-pw"
	p.register()
	if strings.Contains(quiet.String(), "sip request") || strings.Contains(quiet.String(), "sip answer") {
		t.Errorf("info level logs SIP traffic:\n%s", quiet.String())
	}
}
