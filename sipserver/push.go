package sipserver

import (
	"errors"
	"strings"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
	"gchd/registrar"
)

// Pusher wakes sleeping phones through their push service (RFC 8599): a
// phone app that its system suspended has no socket to write to, and
// registered the address its push service knows it by. Neither method may
// block.
type Pusher interface {
	// Wake asks for a push to a device for an event that waits for it.
	Wake(w Wake)
	// Forget tells that a device registered again, or unregistered.
	Forget(device registrar.Push)
}

// Wake is a push to ask for: an event waits for a device that sleeps.
type Wake struct {
	Device registrar.Push
	Login  string
	Event  chat.Event
	// Room is the conversation's address as the phone shows it: the
	// group's, or the sender's for a one-to-one message.
	Room string
	// Sender is the address of the member who caused the event.
	Sender string
}

// The bounds of the push parameters a phone may register: an APNs token is
// 64 characters, an FCM one about 160, and Linphone puts two tokens in one
// pn-prid.
const (
	maxPNProvider = 64
	maxPNPRID     = 1024
	maxPNParam    = 256
	// maxPushParams is what the parameters add to a Contact URI at most.
	maxPushParams = maxPNProvider + maxPNPRID + maxPNParam + len(";pn-provider=;pn-prid=;pn-param=")
)

// pushParams reads a Contact's push parameters (RFC 8599): from its URI,
// where the RFC puts them, else from the Contact's own parameters, where
// some phones put them. A pn-provider without pn-prid asks which push
// services the server supports and asks for no pushes. Anything else
// incomplete or malformed is refused: a phone that meant to be woken and
// would not be should learn it now, not miss its messages.
func pushParams(c *sip.ContactHeader) (registrar.Push, error) {
	params := c.Address.UriParams
	if !hasPushParam(params) {
		params = c.Params
	}
	if !hasPushParam(params) {
		return registrar.Push{}, nil
	}
	var p registrar.Push
	var have struct{ provider, prid bool }
	for _, kv := range params {
		v := strings.Trim(kv.V, `"`)
		switch strings.ToLower(kv.K) {
		case "pn-provider":
			if have.provider || !pushValue(v, maxPNProvider) {
				return p, errors.New("Invalid pn-provider")
			}
			p.Provider, have.provider = v, true
		case "pn-prid":
			if have.prid || !pushValue(v, maxPNPRID) {
				return p, errors.New("Invalid pn-prid")
			}
			p.PRID, have.prid = v, true
		case "pn-param":
			if p.Param != "" || !pushValue(v, maxPNParam) {
				return p, errors.New("Invalid pn-param")
			}
			p.Param = v
		}
	}
	if !have.provider {
		return p, errors.New("Push Parameters Without pn-provider")
	}
	return p, nil
}

func hasPushParam(params sip.HeaderParams) bool {
	for _, kv := range params {
		if k := strings.ToLower(kv.K); k == "pn-provider" || k == "pn-prid" || k == "pn-param" {
			return true
		}
	}
	return false
}

// pushInURI reports whether a Contact URI carries the push parameters.
func pushInURI(uri string) bool {
	var u sip.Uri
	return sip.ParseUri(uri, &u) == nil && hasPushParam(u.UriParams)
}

// pushValue checks a push parameter's value: not empty, at most max
// bytes, and only what RFC 3261 allows in a URI parameter (paramchar), so
// that it is safe in a header and in the gateway's JSON alike.
func pushValue(v string, max int) bool {
	if v == "" || len(v) > max {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("[]/:&+$-_.!~*'()", c) >= 0:
		case c == '%' && i+2 < len(v) && isHex(v[i+1]) && isHex(v[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// addPushCapabilities adds to the 200 of a REGISTER what RFC 8599 asks of a server
// that sends pushes: a Feature-Caps naming each push service the phone
// registered with (or asked about), and forgets the devices that
// registered again or unregistered: they are awake, or want no pushes.
func (s *Server) addPushCapabilities(res *sip.Response, r registrar.RegisterRequest) {
	if s.pusher == nil {
		return
	}
	var named []string
	for _, c := range r.Contacts {
		if c.Push.Provider == "" {
			continue
		}
		if c.Push.Enabled() {
			s.pusher.Forget(c.Push)
		}
		if !contains(named, c.Push.Provider) {
			named = append(named, c.Push.Provider)
			res.AppendHeader(sip.NewHeader("Feature-Caps", `*;+sip.pns="`+c.Push.Provider+`"`))
		}
	}
}
