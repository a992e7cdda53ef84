package httpapi

import (
	"errors"
	"fmt"
	"testing"

	"gchd/chat"
)

func TestCode(t *testing.T) {
	for _, tt := range []struct {
		err  error
		code int
	}{
		{nil, 200}, {chat.ErrInvalid, 400}, {fmt.Errorf("x: %w", chat.ErrTooManyParticipants), 443},
		{chat.ErrNoGroup, 444}, {chat.ErrNotMember, 444}, {chat.ErrNotAllowed, 444}, {chat.ErrNoMessage, 444},
		{chat.ErrNotJoined, 457}, {chat.ErrNotJPEG, 407}, {chat.ErrTooLarge, 411}, {errors.New("db down"), 500},
		{chat.ErrNoMedia, 444}, {chat.ErrUnsupportedMedia, 407}, {chat.ErrPendingQuota, 429}, {chat.ErrGroupQuota, 429},
		{chat.ErrBusy, 503}, {fmt.Errorf("append event: %w", chat.ErrUnavailable), 503},
	} {
		if got := Code(tt.err); got != tt.code {
			t.Errorf("Code(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}

// TestCodesCoverEveryKind: a kind added to the domain needs its code here.
func TestCodesCoverEveryKind(t *testing.T) {
	for k := chat.Invalid; k <= chat.Unavailable; k++ {
		if int(k) >= len(codes) || codes[k] == 0 {
			t.Errorf("error kind %d has no API code", k)
		}
	}
}

// TestActionNames: getMessages names every action by the method that does it.
func TestActionNames(t *testing.T) {
	for a := chat.ActionCreateGroup; a <= chat.ActionDeleteMessage; a++ {
		if actionName(a) == "" {
			t.Errorf("action %d has no op name", a)
		}
	}
	if got := actionName(chat.ActionRevokeAdmin); got != "delAdmin" {
		t.Errorf("op of ActionRevokeAdmin = %q, want delAdmin", got)
	}
}
