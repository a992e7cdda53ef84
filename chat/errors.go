package chat

import (
	"errors"
	"fmt"
)

// Sentinel errors of the domain. Code maps each to the API's 3-digit result
// code; that mapping lives here and nowhere else.
var (
	// ErrInvalid: a parameter is missing, malformed or out of range.
	ErrInvalid = errors.New("invalid parameters")
	// ErrTooManyParticipants: the group would exceed its participant limit.
	ErrTooManyParticipants = errors.New("too many participants")
	// ErrNoGroup: the group does not exist.
	ErrNoGroup = errors.New("no such group")
	// ErrNotMember: the caller (or a named login) is not a member.
	ErrNotMember = errors.New("not a member of the group")
	// ErrNotAllowed: the caller's role does not allow the operation.
	ErrNotAllowed = errors.New("not allowed")
	// ErrNoMessage: the message does not exist in this group.
	ErrNoMessage = errors.New("no such message")
	// ErrNotJoined: the caller is a member but has not joined (or has left).
	ErrNotJoined = errors.New("member has not joined the group")
	// ErrNotJPEG: an image that must be JPEG is not.
	ErrNotJPEG = errors.New("image is not a JPEG")
	// ErrUnsupportedMedia: a video upload is not a recognised video format.
	ErrUnsupportedMedia = errors.New("unsupported media type")
	// ErrTooLarge: an upload is over its size limit.
	ErrTooLarge = errors.New("file too large")
	// ErrNoMedia: the group has no file of the asked kind.
	ErrNoMedia = errors.New("no such file")
	// ErrBusy: every upload slot stayed taken; the caller may try again.
	ErrBusy = errors.New("too many uploads at once")
	// ErrUnavailable: the store cannot serve the request now (the database
	// is down, refuses connections, or cannot be written: a full disk, a
	// read-only database). Nothing was changed; the same request may
	// succeed later, so callers answer "try again" rather than a failure.
	// The store marks its errors with it; the domain never returns it itself.
	ErrUnavailable = errors.New("storage unavailable")
)

// Quota refusals. The specification has no code for them: they answer 429,
// which the API already answers for its rate limits.
var (
	// ErrPendingQuota: the sender has too many unsolicited events waiting
	// for a recipient (Limits.MaxPendingPerSender).
	ErrPendingQuota = errors.New("too many events waiting for the recipient")
	// ErrGroupQuota: the caller created too many groups within the last
	// hour (Limits.MaxGroupsPerHour).
	ErrGroupQuota = errors.New("too many groups created within an hour")
)

// Quota names, for WithQuotaObserver and the metrics.
const (
	QuotaPending = "pending"
	QuotaGroups  = "groups"
)

// CodeQuota answers a quota refusal.
const CodeQuota = 429

// Result codes of the API specification.
const (
	CodeOK                  = 200
	CodeInvalid             = 400
	CodeNotJPEG             = 407
	CodeTooLarge            = 411
	CodeTooManyParticipants = 443
	CodeNotFound            = 444
	CodeNotJoined           = 457
	CodeInternal            = 500
	CodeUnavailable         = 503
)

// Code returns the API result code for err: 200 for nil, 503 while the
// store is unavailable, 500 for anything else the domain does not know (a
// failing query, say).
func Code(err error) int {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, ErrInvalid):
		return CodeInvalid
	case errors.Is(err, ErrTooManyParticipants):
		return CodeTooManyParticipants
	case errors.Is(err, ErrNoGroup), errors.Is(err, ErrNotMember),
		errors.Is(err, ErrNotAllowed), errors.Is(err, ErrNoMessage),
		errors.Is(err, ErrNoMedia):
		return CodeNotFound
	case errors.Is(err, ErrNotJoined):
		return CodeNotJoined
	case errors.Is(err, ErrNotJPEG), errors.Is(err, ErrUnsupportedMedia):
		return CodeNotJPEG
	case errors.Is(err, ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, ErrPendingQuota), errors.Is(err, ErrGroupQuota):
		return CodeQuota
	case errors.Is(err, ErrBusy), errors.Is(err, ErrUnavailable), errors.Is(err, ErrStreamsClosed):
		return CodeUnavailable
	default:
		return CodeInternal
	}
}

// invalid wraps ErrInvalid with the reason, for logs and tests.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
