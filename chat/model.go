// Package chat is the group chat domain: groups, their members and roles, the
// per-group event log shared by messages and notifications, receipts, and the
// kind of each failure (ErrorKind; each face maps kinds to its own codes). It
// knows nothing of SIP or HTTP; it declares the small interfaces it needs
// (Store, DeliveryStore, Deliverer, Publisher) and the adapters at the edge
// implement them.
package chat

import (
	"fmt"
	"time"
)

// GroupID identifies a group. The API defines it as an unsigned 32-bit integer.
type GroupID uint32

// MID identifies one event of the log. One increasing sequence per server
// numbers messages and notifications alike.
type MID uint64

// Status is a member's state in a group.
type Status string

const (
	StatusWaiting Status = "w" // invited, has not joined yet
	StatusJoined  Status = "j"
	StatusLeft    Status = "l" // left or removed; addMember invites again
)

// Active reports whether the member takes part in the group (counts towards
// the participant limit and receives NG/DG).
func (s Status) Active() bool { return s == StatusWaiting || s == StatusJoined }

// Kind is the type of an event in a group's log.
type Kind string

const (
	KindMessage       Kind = "MSG"
	KindNewGroup      Kind = "NG"
	KindEditGroup     Kind = "EG"
	KindDeleteGroup   Kind = "DG"
	KindDeleteMessage Kind = "DM"
	// KindDirect is a one-to-one message stored for a user who had no
	// reachable device; it belongs to no group (Group is 0).
	KindDirect         Kind = "DIR"
	notificationPrefix      = "~[GC M:'"
)

// Unsolicited reports whether an event of this kind reaches its recipients
// without their having joined anything: an invitation (NG), the deletion
// of a group they were invited to (DG), a direct message. These are what
// Limits.MaxPendingPerSender bounds: group messages reach only members who
// joined, and who may leave.
func (k Kind) Unsolicited() bool {
	return k == KindNewGroup || k == KindDeleteGroup || k == KindDirect
}

// IsNotification reports whether events of this kind travel as the spec's
// ~[GC ...] notification text rather than as user text.
func (k Kind) IsNotification() bool { return k != KindMessage && k != KindDirect }

// Group is a group chat's settings.
type Group struct {
	ID      GroupID
	Subject string
	// Owner is the member with owner rights (delGroup). It is the creator
	// until the creator leaves; then it passes to the longest-joined admin.
	Owner    string
	Created  time.Time
	AvatarAt time.Time // zero: no avatar
	VideoAt  time.Time // zero: no video
}

// HasAvatar reports whether the group has an avatar image.
func (g Group) HasAvatar() bool { return !g.AvatarAt.IsZero() }

// HasVideo reports whether the group has a video.
func (g Group) HasVideo() bool { return !g.VideoAt.IsZero() }

// Member is one login's place in a group.
type Member struct {
	Group       GroupID
	Login       string
	DisplayName string
	Status      Status
	Admin       bool
	// Since is when Status last changed; for joined members it orders
	// seniority (the longest-joined member inherits admin rights).
	Since time.Time
	// HasAccount is false for a guest: a login (a phone number, say) that
	// has no SIP account on this server. Guests are listed apart and receive
	// nothing until such an account exists.
	HasAccount bool
}

// Guest reports whether the member is a guest.
func (m Member) Guest() bool { return !m.HasAccount }

// Event is one entry of a group's log: a message or a notification.
type Event struct {
	MID      MID
	Group    GroupID
	Kind     Kind
	Sender   string // login of the member who caused the event
	SenderDN string // display name the sender gave for this event
	// Body is the text of a message (KindMessage, KindDirect).
	Body string
	// Action is what caused a notification (for history); ActionNone for
	// a message.
	Action  Action
	Ref     MID // for KindDeleteMessage: the deleted message
	Time    time.Time
	Deleted bool // a message removed by delMessage; Body is gone
	// Origin names the sender's device a message came from ("" over HTTP),
	// so that the copies to the sender's other devices skip it.
	Origin string
	// ContentType of Body for KindDirect; group text is text/plain.
	ContentType string
	// Source names the face the event came through (http, sip), from the
	// request's context; it is not stored.
	Source string
}

// Action is the change of a group that a notification announces.
type Action uint8

const (
	ActionNone Action = iota
	ActionCreateGroup
	ActionDeleteGroup
	ActionSetSubject
	// ActionEditGroup: the group's settings changed as a whole (the
	// subject, and what later settings join it).
	ActionEditGroup
	ActionJoin
	ActionLeave
	ActionAddMembers
	ActionRemoveMembers
	ActionGrantAdmin
	ActionRevokeAdmin
	ActionSetMedia
	ActionDeleteMedia
	ActionDeleteMessage
)

// NotificationText is the body of the SIP MESSAGE that announces a
// notification event, exactly as the API specification gives it. For DM the
// MID is the deleted message's: that is what a client must remove.
func (e Event) NotificationText() string {
	mid := e.MID
	if e.Kind == KindDeleteMessage {
		mid = e.Ref
	}
	return fmt.Sprintf("%s%s' GID:%d MID:%d]", notificationPrefix, e.Kind, e.Group, mid)
}

// MemberGroup is a group as one of its participants lists it: where the
// group's log ends and what the participant has not read yet.
type MemberGroup struct {
	Group
	LastMID MID       // the newest event of the group's log, message or notification
	LastAt  time.Time // when it happened
	// ReadMID is the participant's read marker: the messages up to it
	// count as read (readUpTo, or readMessage of the newest message).
	ReadMID MID
	// Unread counts the live messages of others that were due to the
	// participant, above the marker and not marked read one by one.
	Unread int
}

// Receipt is one recipient's state for one message.
type Receipt struct {
	Login     string
	Confirmed time.Time // cf: first delivery or confMessage; zero if not yet
	Read      time.Time // rd: readMessage; zero if not yet
}

// MediaKind names a group's media slot.
type MediaKind string

const (
	MediaAvatar     MediaKind = "image"
	MediaVideo      MediaKind = "video"
	MediaVideoThumb MediaKind = "video-thumbnail"
)

// Media is a stored file of a group.
type Media struct {
	Group       GroupID
	Kind        MediaKind
	ContentType string
	Data        []byte
	Updated     time.Time
}

// Caller is the authenticated user on whose behalf an operation runs. Its
// login is the only identity; display names never authorize anything.
type Caller struct {
	Login       string
	DisplayName string // the account's display name, a fallback for dn
}

// Invitee is a login named by addGroup or addMember, with the display name
// the inviting member gave it.
type Invitee struct {
	Login       string
	DisplayName string
}
