package sipserver

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
	"gchd/registrar"
)

func TestStatusOf(t *testing.T) {
	for _, tt := range []struct {
		err    error
		code   int
		reason string
	}{
		{&registrar.IntervalTooBrief{MinExpires: time.Minute}, 423, "Interval Too Brief"},
		{registrar.ErrOutOfOrder, 400, "Invalid CSeq Number"},
		{registrar.ErrBadWildcard, 400, "Invalid Wildcard Contact"},
		{registrar.ErrTooManyContacts, 403, "Too Many Registered Contacts"},
		{fmt.Errorf("read account: %w", registrar.ErrUnavailable), 503, "Service Unavailable"},
		{fmt.Errorf("%w: message is empty", chat.ErrInvalid), 400, "Bad Message"},
		{chat.ErrNotJoined, 403, "Forbidden: Not Joined"},
		{chat.ErrNoGroup, 404, "Not Found"},
		{chat.ErrNotMember, 404, "Not Found"},
		{chat.ErrNotAllowed, 404, "Not Found"},
		{fmt.Errorf("%w: 3 waiting", chat.ErrPendingQuota), 486, "Busy Here: Too Many Messages Waiting"},
		{fmt.Errorf("append event: %w", chat.ErrUnavailable), 503, "Service Unavailable"},
		{errors.New("syntax error"), 500, "Server Internal Error"},
	} {
		if got := statusOf(tt.err); got.code != tt.code || got.reason != tt.reason {
			t.Errorf("statusOf(%v) = %d %s, want %d %s", tt.err, got.code, got.reason, tt.code, tt.reason)
		}
	}
}

// TestStatusesCoverEveryKind: a kind added to the domain needs its answer.
func TestStatusesCoverEveryKind(t *testing.T) {
	for k := chat.Internal; k <= chat.Unavailable; k++ {
		if int(k) >= len(chatStatus) || chatStatus[k].code == 0 {
			t.Errorf("error kind %d has no SIP answer", k)
		}
	}
}

// The refusal carries what the error calls for: Min-Expires from the
// registrar's refusal, Retry-After while the store is unavailable.
func TestRefusalHeaders(t *testing.T) {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: "example.org"})
	res := refusal(req, &registrar.IntervalTooBrief{MinExpires: 90 * time.Second})
	if h := res.GetHeader("Min-Expires"); h == nil || h.Value() != "90" {
		t.Errorf("423 Min-Expires = %v, want 90", h)
	}
	res = refusal(req, fmt.Errorf("x: %w", chat.ErrUnavailable))
	if h := res.GetHeader("Retry-After"); res.StatusCode != 503 || h == nil || h.Value() != "5" {
		t.Errorf("unavailable: %d, Retry-After %v; want 503 and 5", res.StatusCode, h)
	}
	if res := refusal(req, chat.ErrNoGroup); res.GetHeader("Retry-After") != nil || res.GetHeader("Min-Expires") != nil {
		t.Errorf("404 with headers: %v", res)
	}
}

func TestCommandAnswer(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{chat.ErrNotJoined, "Join the group first (#join)."},
		{fmt.Errorf("x: %w", chat.ErrNotAllowed), "Only the group's admins may do that."},
		{chat.ErrNoGroup, "You are not a member of this group."},
		{chat.ErrNotMember, "You are not a member of this group."},
		{fmt.Errorf("%w: subject is empty", chat.ErrInvalid), "That is not valid: subject is empty"},
		{chat.ErrUnavailable, "Something went wrong; try again later."},
		{errors.New("disk on fire"), "Something went wrong; try again later."},
	} {
		if got := failedCommandText(tt.err); got != tt.want {
			t.Errorf("failedCommandText(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
