package chat

import (
	"errors"
	"fmt"
)

// ErrorKind classifies a failure of the domain by what the caller can do
// about it. The domain knows no result codes: each face (the API, SIP)
// maps kinds to its own answers in one table.
type ErrorKind uint8

const (
	// Internal: a failure the domain does not classify (a failing query,
	// say); the caller can do nothing about it.
	Internal ErrorKind = iota
	// Invalid: a parameter is missing, malformed or out of range.
	Invalid
	// TooManyParticipants: the group would exceed its participant limit.
	TooManyParticipants
	// NotFound: there is no such group, message or file.
	NotFound
	// NotMember: the caller (or a login named) is not a member.
	NotMember
	// NotAllowed: the caller's role does not allow the operation.
	NotAllowed
	// NotJoined: the caller is a member but has not joined (or has left).
	NotJoined
	// UnsupportedMedia: a file is not of a type accepted for its use.
	UnsupportedMedia
	// TooLarge: an upload is over its size limit.
	TooLarge
	// Quota: an account quota refuses the operation for now.
	Quota
	// Busy: every upload slot stayed taken; the same request may succeed
	// within seconds.
	Busy
	// Unavailable: the store cannot serve now; nothing was changed and the
	// same request may succeed later.
	Unavailable
)

// Error is a failure of the domain: its kind and what went wrong. The
// sentinel errors below are Errors; the domain wraps them with details
// (fmt.Errorf with %w), so errors.Is finds the sentinel and ErrorKindOf
// its kind through any wrapping.
type Error struct {
	Kind ErrorKind
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func newError(kind ErrorKind, text string) *Error {
	return &Error{Kind: kind, Err: errors.New(text)}
}

// ErrorKindOf returns the kind of a non-nil err: Unavailable when the store
// marked it so (its errors answer errors.Is(err, ErrUnavailable)), the kind
// of the Error it wraps, else Internal.
func ErrorKindOf(err error) ErrorKind {
	if errors.Is(err, ErrUnavailable) {
		return Unavailable
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Sentinel errors of the domain, each of its kind.
var (
	ErrInvalid             = newError(Invalid, "invalid parameters")
	ErrTooManyParticipants = newError(TooManyParticipants, "too many participants")
	ErrNoGroup             = newError(NotFound, "no such group")
	ErrNoMessage           = newError(NotFound, "no such message")
	// ErrNoMedia: the group has no file of the asked kind.
	ErrNoMedia   = newError(NotFound, "no such file")
	ErrNotMember = newError(NotMember, "not a member of the group")
	// ErrNotAllowed: the caller's role does not allow the operation.
	ErrNotAllowed = newError(NotAllowed, "not allowed")
	ErrNotJoined  = newError(NotJoined, "member has not joined the group")
	// ErrNotJPEG: an image that must be JPEG is not.
	ErrNotJPEG = newError(UnsupportedMedia, "image is not a JPEG")
	// ErrUnsupportedMedia: a video upload is not a recognised video format.
	ErrUnsupportedMedia = newError(UnsupportedMedia, "unsupported media type")
	ErrTooLarge         = newError(TooLarge, "file too large")
	ErrBusy             = newError(Busy, "too many uploads at once")
	// ErrUnavailable: the store cannot serve the request now (the database
	// is down, refuses connections, or cannot be written: a full disk, a
	// read-only database). The store marks its errors with it; the domain
	// never returns it itself.
	ErrUnavailable = newError(Unavailable, "storage unavailable")
)

// Quota refusals, of kind Quota.
var (
	// ErrPendingQuota: the sender has too many unsolicited events waiting
	// for a recipient (Limits.MaxPendingPerSender).
	ErrPendingQuota = newError(Quota, "too many events waiting for the recipient")
	// ErrGroupQuota: the caller created too many groups within the last
	// hour (Limits.MaxGroupsPerHour).
	ErrGroupQuota = newError(Quota, "too many groups created within an hour")
)

// Quota names, for WithQuotaObserver and the metrics.
const (
	QuotaPending = "pending"
	QuotaGroups  = "groups"
)

// invalid wraps ErrInvalid with the reason, for logs and tests.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
