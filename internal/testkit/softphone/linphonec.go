package softphone

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Linphonec is Linphone's console client (Debian 12's linphone-cli,
// liblinphone 5.1), headless: commands on its standard input, its
// configuration in a file (-c), its home (chat database) in a directory
// of its own, its SIP log (-d 6 -l) kept for the test to read.
type Linphonec struct {
	*Proc
	Account
	Log string // the SIP log's path
}

// LinphoneRC is the configuration file every linphonec of the tests uses,
// as docs/sip.md shows it: SIP and RTP on ephemeral ports, the server at
// a.Addr over a.Transport as the registrar and outbound proxy.
func LinphoneRC(a Account) string {
	tr := strings.ToLower(a.Transport)
	return fmt.Sprintf(`[sip]
sip_port=-1
sip_tcp_port=-1
sip_tls_port=0
default_proxy=0
[rtp]
audio_rtp_port=-1
video_rtp_port=-1
[proxy_0]
reg_proxy=<sip:%[3]s;transport=%[4]s>
reg_route=<sip:%[3]s;transport=%[4]s;lr>
reg_identity=sip:%[1]s@%[2]s
reg_expires=600
reg_sendregister=1
[auth_info_0]
username=%[1]s
passwd=%[5]s
realm=%[2]s
domain=%[2]s
`, a.Login, a.Domain, a.Addr, tr, a.Password)
}

// StartLinphonec starts linphonec for a, with sound from files instead of
// a sound card; the test waits for its registration. autoAnswer answers
// calls at once (-a).
func StartLinphonec(t testing.TB, a Account, autoAnswer bool) *Linphonec {
	t.Helper()
	bin := Need(t, "linphonec", "linphone-cli")
	dir := t.TempDir()
	rc := filepath.Join(dir, "linphonerc")
	if err := os.WriteFile(rc, []byte(LinphoneRC(a)), 0o600); err != nil {
		t.Fatal(err)
	}
	// liblinphone keeps its chat database under $HOME/.local/share.
	if err := os.MkdirAll(filepath.Join(dir, ".local", "share", "linphone"), 0o700); err != nil {
		t.Fatal(err)
	}
	l := &Linphonec{Account: a, Log: filepath.Join(dir, "linphone.log")}
	args := []string{"-c", rc, "-d", "6", "-l", l.Log}
	if autoAnswer {
		args = append(args, "-a")
	}
	l.Proc = Start(t, "linphonec "+a.Login, "quit", dir, []string{"HOME=" + dir}, bin, args...)
	l.Send("soundcard use files")
	return l
}

// Chat sends text to a SIP URI.
func (l *Linphonec) Chat(uri, text string) { l.Send("chat " + uri + " " + text) }

// Call calls the user user of the account's domain.
func (l *Linphonec) Call(user string) { l.Send("call sip:" + user + "@" + l.Domain) }

// ExpectMessage waits for text from the user (or group) part from, as
// linphonec prints it.
func (l *Linphonec) ExpectMessage(from, text string) {
	l.t.Helper()
	l.Expect("Message received from ", "sip:"+from+"@"+l.Domain, ": "+text)
}

// SIPLog is linphonec's SIP log so far.
func (l *Linphonec) SIPLog() string {
	b, _ := os.ReadFile(l.Log)
	return string(b)
}
