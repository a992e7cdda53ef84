package sipserver

import (
	"bytes"
	"context"
	"encoding/xml"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
)

// Typing notices (RFC 3994) in groups are relayed, never stored: what they
// say is true only now. One notice becomes one MESSAGE per device of every
// other joined member, so they are bounded: per sender and group by a rate,
// in size, and in the requests in flight (maxOnce).
const (
	isComposingType = "application/im-iscomposing+xml"
	isComposingNS   = "urn:ietf:params:xml:ns:im-iscomposing"
	// maxTypingBytes bounds a notice's body; RFC 3994's documents take
	// a few hundred bytes.
	maxTypingBytes = 4096
	// typingRate and typingBurst bound the notices one member sends to
	// one group: a client sends one when typing starts, stops, and every
	// refresh interval (RFC 3994's default is 120 s) while it goes on.
	typingRate  = 1.0
	typingBurst = 5
	// typingTimeout: a notice later than this says nothing true any more.
	typingTimeout = 10 * time.Second
)

// isComposing reports whether a request carries an RFC 3994 notice.
func isComposing(req *sip.Request) bool {
	ct := req.ContentType()
	if ct == nil {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct.Value())
	return err == nil && mt == isComposingType
}

// composingDoc is what gchd reads of an isComposing document and relays:
// nothing else a sender put in it reaches the others.
type composingDoc struct {
	XMLName     xml.Name `xml:"isComposing"`
	State       string   `xml:"state"`
	LastActive  string   `xml:"lastactive"`
	ContentType string   `xml:"contenttype"`
	Refresh     string   `xml:"refresh"`
}

// composingBody checks a notice's body and returns the document to relay,
// written anew from the fields it checked.
func composingBody(req *sip.Request) ([]byte, *sip.Response) {
	body := req.Body()
	if len(body) > maxTypingBytes {
		return nil, newResponse(req, 413, "Request Entity Too Large")
	}
	var d composingDoc
	if !utf8.Valid(body) || xml.Unmarshal(body, &d) != nil {
		return nil, newResponse(req, 400, "Bad isComposing Document")
	}
	if d.XMLName.Space != isComposingNS && d.XMLName.Space != "" {
		return nil, newResponse(req, 400, "Bad isComposing Document")
	}
	state := strings.ToLower(strings.TrimSpace(d.State))
	if state != "active" && state != "idle" {
		return nil, newResponse(req, 400, "Bad isComposing State")
	}
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	b.WriteString(`<isComposing xmlns="` + isComposingNS + `"><state>` + state + `</state>`)
	if v := strings.TrimSpace(d.LastActive); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return nil, newResponse(req, 400, "Bad isComposing lastactive")
		}
		b.WriteString("<lastactive>" + t.UTC().Format(time.RFC3339) + "</lastactive>")
	}
	if v := strings.TrimSpace(d.ContentType); v != "" {
		mt, params, err := mime.ParseMediaType(v)
		ct := mime.FormatMediaType(mt, params)
		if err != nil || ct == "" || len(ct) > 128 {
			return nil, newResponse(req, 400, "Bad isComposing contenttype")
		}
		var esc bytes.Buffer
		xml.EscapeText(&esc, []byte(ct))
		b.WriteString("<contenttype>" + esc.String() + "</contenttype>")
	}
	if v := strings.TrimSpace(d.Refresh); v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return nil, newResponse(req, 400, "Bad isComposing refresh")
		}
		b.WriteString("<refresh>" + strconv.FormatUint(n, 10) + "</refresh>")
	}
	b.WriteString("</isComposing>\n")
	return b.Bytes(), nil
}

// onGroupTyping relays a joined member's typing notice to the other joined
// members' devices registered now, from the group's address with her
// display name and X-GC-From, as group text comes. It has no MID and is
// neither stored nor retried: a member who is offline misses it.
func (s *Server) onGroupTyping(ctx context.Context, req *sip.Request, sender string, id chat.GroupID) *sip.Response {
	body, bad := composingBody(req)
	if bad != nil {
		return bad
	}
	logins, err := s.chat.TypingRecipients(ctx, chat.Caller{Login: sender}, id)
	if err != nil {
		return s.refuse(req, err, "typing notice", "group", id, "login", sender)
	}
	if !s.typing.Allow(sender + "|" + strconv.FormatUint(uint64(id), 10)) {
		s.metrics.LimitRejected("sip_typing")
		res := newResponse(req, 503, "Service Unavailable: Too Many Typing Notices")
		res.AppendHeader(sip.NewHeader("Retry-After", "1"))
		return res
	}
	dn := fromDisplayName(req)
	if dn == "" {
		if acc, err := s.accounts.Lookup(ctx, sender); err == nil && acc.DisplayName != "" {
			dn = acc.DisplayName
		} else {
			dn = sender
		}
	}
	for _, login := range logins {
		for _, t := range s.route.targetsOf(login) {
			s.send.sendOnce(s.typingRequest(id, sender, dn, login, t, body), typingTimeout)
		}
	}
	return newResponse(req, 200, "OK")
}

// typingRequest builds the MESSAGE that carries a typing notice to one
// device.
func (s *Server) typingRequest(id chat.GroupID, sender, dn, login string, t target, body []byte) *sip.Request {
	ev := chat.Event{Group: id, Kind: chat.KindMessage, Sender: sender, SenderDN: dn}
	req := s.send.eventRequest(ev, login, t)
	req.RemoveHeader("X-GC-MID")
	req.ReplaceHeader(sip.NewHeader("Content-Type", isComposingType))
	req.SetBody(body)
	return req
}
