package sipserver

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
	"gchd/registrar"
)

// status is the SIP answer to a failure.
type status struct {
	code   int
	reason string
	// retryAfter is the Retry-After of the answer, in seconds ("": none):
	// while the database is down or cannot be written the phone retries
	// later, or another server (RFC 3261 21.5.4).
	retryAfter string
}

// registrarStatus answers the registrar's refusals (RFC 3261 10.3) and its
// store's unavailability.
var registrarStatus = []struct {
	err    error
	status status
}{
	{registrar.ErrIntervalTooBrief, status{423, "Interval Too Brief", ""}},
	{registrar.ErrOutOfOrder, status{400, "Invalid CSeq Number", ""}},
	{registrar.ErrBadWildcard, status{400, "Invalid Wildcard Contact", ""}},
	{registrar.ErrTooManyContacts, status{403, "Too Many Registered Contacts", ""}},
	{registrar.ErrUnavailable, status{503, "Service Unavailable", "5"}},
}

// chatStatus answers each kind of failure of the chat domain: posts to a
// group, typing notices, receipts and messages stored for later.
var chatStatus = [...]status{
	chat.Internal:            {500, "Server Internal Error", ""},
	chat.Invalid:             {400, "Bad Message", ""},
	chat.TooManyParticipants: {403, "Forbidden: Too Many Participants", ""},
	// No such group, not a member and not allowed look alike, as in the API.
	chat.NotFound:         {404, "Not Found", ""},
	chat.NotMember:        {404, "Not Found", ""},
	chat.NotAllowed:       {404, "Not Found", ""},
	chat.NotJoined:        {403, "Forbidden: Not Joined", ""},
	chat.UnsupportedMedia: {415, "Unsupported Media Type", ""},
	chat.TooLarge:         {413, "Request Entity Too Large", ""},
	// A phone shows "busy" and does not retry by itself; the quota frees
	// up once the recipient takes what waits.
	chat.Quota:       {486, "Busy Here: Too Many Messages Waiting", ""},
	chat.Busy:        {503, "Service Unavailable", "1"},
	chat.Unavailable: {503, "Service Unavailable", "5"},
}

// statusOf returns the SIP answer to err: 500 for what neither the
// registrar nor the chat domain classifies.
func statusOf(err error) status {
	for _, r := range registrarStatus {
		if errors.Is(err, r.err) {
			return r.status
		}
	}
	if k := chat.ErrorKindOf(err); int(k) < len(chatStatus) {
		return chatStatus[k]
	}
	return chatStatus[chat.Internal]
}

// refusal answers req with the status of err, and the headers it calls for:
// Retry-After, Min-Expires.
func refusal(req *sip.Request, err error) *sip.Response {
	st := statusOf(err)
	res := newResponse(req, st.code, st.reason)
	if st.retryAfter != "" {
		res.AppendHeader(sip.NewHeader("Retry-After", st.retryAfter))
	}
	var brief *registrar.IntervalTooBrief
	if errors.As(err, &brief) {
		res.AppendHeader(sip.NewHeader("Min-Expires", strconv.Itoa(int(brief.MinExpires/time.Second))))
	}
	return res
}

// refuse answers req with the refusal of err, and logs err when it is the
// server's failure (a 5xx), as what failed with args.
func (s *Server) refuse(req *sip.Request, err error, what string, args ...any) *sip.Response {
	res := refusal(req, err)
	if res.StatusCode >= 500 {
		s.log.Error(what, append(args, "call_id", callID(req), "error", err)...)
	}
	return res
}

// failedCommandTexts is what a plain phone is told when a command (#join,
// #subject...) fails, by kind; any other failure is worth a retry.
var failedCommandTexts = [...]string{
	chat.NotJoined:  "Join the group first (#join).",
	chat.NotAllowed: "Only the group's admins may do that.",
	chat.NotFound:   "You are not a member of this group.",
	chat.NotMember:  "You are not a member of this group.",
	chat.Invalid:    "That is not valid: ",
}

// failedCommandText is what a phone is told when its command failed with
// err; an invalid one names the reason.
func failedCommandText(err error) string {
	k := chat.ErrorKindOf(err)
	if int(k) >= len(failedCommandTexts) || failedCommandTexts[k] == "" {
		return "Something went wrong; try again later."
	}
	if k == chat.Invalid {
		return failedCommandTexts[k] + strings.TrimPrefix(err.Error(), chat.ErrInvalid.Error()+": ")
	}
	return failedCommandTexts[k]
}
