package sipserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// flowParam carries a signed flow token in our Record-Route URIs (RFC 5626
// section 5.3): requests later in the dialog go back over that flow even
// when the phone's Contact is unreachable.
const flowParam = "gchd-flow"

const branchMagic = "z9hG4bK-gc"

// flowSigner signs flows (a transport and a source address) into the
// tokens gchd puts in its Record-Route entries and Via branches, each for
// one dialog (its Call-ID): a token seen in one dialog opens no way into
// another, and nodes sharing the secret read each other's.
type flowSigner struct {
	secret []byte
}

// macLen is how much of the HMAC a token keeps.
const macLen = 12

// routeToken signs a flow for a Record-Route entry.
func (f flowSigner) routeToken(transport, source, callID string) string {
	payload := transport + "|" + source
	return base64.RawURLEncoding.EncodeToString(append([]byte(payload), f.routeMAC(payload, callID)...))
}

// openRouteToken returns the flow a token made by routeToken names, when
// it is valid for callID.
func (f flowSigner) openRouteToken(tok, callID string) (transport, source string, ok bool) {
	payload, ok := f.open(tok, callID, f.routeMAC)
	if !ok {
		return "", "", false
	}
	return strings.Cut(payload, "|")
}

func (f flowSigner) routeMAC(payload, callID string) []byte {
	m := hmac.New(sha256.New, f.secret)
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return m.Sum(nil)[:macLen]
}

// branch makes the branch of a request gchd forwards from source over
// transport: the magic cookie and loop key (looped), a random part that
// makes it unique, and a token that signs the sender's flow for the
// request's Call-ID. A response that arrives after its client transaction
// ended (relayStray) is relayed only when its branch carries a valid
// token, and only to the flow the token names: a forged response with our
// branch prefix and a second Via naming a victim reaches nobody.
func (f flowSigner) branch(key, transport, source, callID string) string {
	payload := transport + "|" + source
	return branchMagic + key + "-" + sip.GenerateBranchN(12)[len("z9hG4bK."):] + "." +
		base64.RawURLEncoding.EncodeToString(append([]byte(payload), f.branchMAC(payload, callID)...))
}

// branchFlow returns the flow a branch made by branch names, when its
// token is valid for callID.
func (f flowSigner) branchFlow(branch, callID string) (transport, source string, ok bool) {
	if !strings.HasPrefix(branch, branchMagic) {
		return "", "", false
	}
	_, tok, found := strings.Cut(branch[len(branchMagic):], ".")
	if !found {
		return "", "", false
	}
	payload, ok := f.open(tok, callID, f.branchMAC)
	if !ok {
		return "", "", false
	}
	return strings.Cut(payload, "|")
}

// branchMAC signs a branch's flow; its input starts with "branch", which
// no Record-Route token's payload (a transport name) does, so neither
// token passes for the other.
func (f flowSigner) branchMAC(payload, callID string) []byte {
	m := hmac.New(sha256.New, f.secret)
	m.Write([]byte("branch\x00"))
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return m.Sum(nil)[:macLen]
}

// open checks a token's MAC and returns its payload.
func (f flowSigner) open(tok, callID string, mac func(payload, callID string) []byte) (string, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(raw) <= macLen {
		return "", false
	}
	payload, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sum, mac(string(payload), callID)) {
		return "", false
	}
	return string(payload), true
}
