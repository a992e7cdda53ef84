package softphone

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Baresip is baresip 1.0 (Debian 12's), headless: commands on its
// standard input (the stdio module), its configuration in a directory of
// its own (-f), no sound card (audio from a WAV file, no player).
type Baresip struct {
	*Proc
	Account
}

// BaresipOption changes how a baresip is set up.
type BaresipOption func(*baresipSetup)

type baresipSetup struct {
	params   string   // extra account parameters
	contacts []string // SIP URIs; the first is the current contact
}

// AutoAnswer makes the account answer calls by itself.
func AutoAnswer() BaresipOption {
	return func(b *baresipSetup) { b.params += ";answermode=auto" }
}

// Contacts lists the contacts; Message goes to the first.
func Contacts(uris ...string) BaresipOption {
	return func(b *baresipSetup) { b.contacts = uris }
}

// BaresipConfig is the configuration every baresip of the tests uses, as
// docs/sip.md shows it: SIP on an ephemeral port of loopback, G.711, and
// a WAV file instead of a microphone.
func BaresipConfig(wav string) string {
	return `poll_method		epoll
sip_listen		127.0.0.1:0
audio_source		aufile,` + wav + `
module_path		/usr/lib/baresip/modules
module			stdio.so
module			g711.so
module			aufile.so
module_tmp		account.so
module_app		contact.so
module_app		menu.so
`
}

// BaresipAccount is the accounts line of a, with extra parameters.
func BaresipAccount(a Account, params string) string {
	tr := strings.ToLower(a.Transport)
	return fmt.Sprintf("<sip:%s@%s;transport=%s>;auth_pass=%s;outbound=\"sip:%s;transport=%s\";regint=600%s\n",
		a.Login, a.Domain, tr, a.Password, a.Addr, tr, params)
}

// StartBaresip starts baresip for a and waits until it says that its
// registration was answered 200 (the server may commit it just after).
func StartBaresip(t testing.TB, a Account, opts ...BaresipOption) *Baresip {
	t.Helper()
	bin := Need(t, "baresip", "baresip")
	var setup baresipSetup
	for _, o := range opts {
		o(&setup)
	}
	dir := t.TempDir()
	files := map[string]string{
		"config":   BaresipConfig(SilenceWAV(t, dir, 30)),
		"accounts": BaresipAccount(a, setup.params),
	}
	var contacts strings.Builder
	for _, c := range setup.contacts {
		fmt.Fprintf(&contacts, "<%s>\n", c)
	}
	files["contacts"] = contacts.String()
	if len(setup.contacts) > 0 {
		files["current_contact"] = setup.contacts[0] + "\n"
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := &Baresip{Proc: Start(t, "baresip "+a.Login, "/quit", dir, nil, bin, "-f", dir), Account: a}
	b.Expect(a.Login+"@"+a.Domain+": {0/"+strings.ToUpper(a.Transport), "200 OK")
	return b
}

// Message sends text to the current contact.
func (b *Baresip) Message(text string) { b.Send("/message " + text) }

// Dial calls the user (or other address) user of the account's domain.
func (b *Baresip) Dial(user string) { b.Send("/dial sip:" + user + "@" + b.Domain) }

// ExpectMessage waits for a MESSAGE from the user (or group) part from
// with text, as baresip prints it.
func (b *Baresip) ExpectMessage(from, text string) {
	b.t.Helper()
	b.Expect(fmt.Sprintf("sip:%s@%s: %q", from, b.Domain, text))
}

// ExpectCall waits until a call with the user peer is established.
func (b *Baresip) ExpectCall(peer string) {
	b.t.Helper()
	b.Expect("Call established: sip:" + peer + "@" + b.Domain)
}

// ExpectClosed waits until the peer user peer closed the call (baresip
// names a hang-up by the peer "session closed").
func (b *Baresip) ExpectClosed(peer string) {
	b.t.Helper()
	b.Expect("sip:" + peer + "@" + b.Domain + ": session closed")
}
