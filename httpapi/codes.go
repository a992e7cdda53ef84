package httpapi

import (
	"gchd/chat"
)

// Result codes of the API specification, and two of ours: 429 and 503.
const (
	codeOK                  = 200
	codeInvalid             = 400
	codeNotJPEG             = 407
	codeTooLarge            = 411
	codeTooManyParticipants = 443
	codeNotFound            = 444
	codeNotJoined           = 457
	codeInternal            = 500
	codeUnavailable         = 503
	// codeQuota answers a quota refusal. The specification has no code
	// for them: 429 is what the API answers for its rate limits already.
	codeQuota = 429
)

// codes is the API's answer to each kind of failure of the domain: the one
// table of this face.
var codes = [...]int{
	chat.Internal:            codeInternal,
	chat.Invalid:             codeInvalid,
	chat.TooManyParticipants: codeTooManyParticipants,
	// No such group, not a member and not allowed look alike, as the
	// specification has it: nothing leaks about groups the caller is not in.
	chat.NotFound:         codeNotFound,
	chat.NotMember:        codeNotFound,
	chat.NotAllowed:       codeNotFound,
	chat.NotJoined:        codeNotJoined,
	chat.UnsupportedMedia: codeNotJPEG,
	chat.TooLarge:         codeTooLarge,
	chat.Quota:            codeQuota,
	chat.Busy:             codeUnavailable,
	chat.Unavailable:      codeUnavailable,
}

// Code returns the API result code for err: 200 for nil, 503 while the
// store is unavailable, 500 for anything the domain does not classify (a
// failing query, say).
func Code(err error) int {
	if err == nil {
		return codeOK
	}
	if k := chat.ErrorKindOf(err); int(k) < len(codes) {
		return codes[k]
	}
	return codeInternal
}

// actionNames are how getMessages names what caused a notification (op):
// the API method that does it.
var actionNames = [...]string{
	chat.ActionCreateGroup:   "addGroup",
	chat.ActionDeleteGroup:   "delGroup",
	chat.ActionSetSubject:    "setGroupSubject",
	chat.ActionEditGroup:     "editGroup",
	chat.ActionJoin:          "joinGroup",
	chat.ActionLeave:         "leaveGroup",
	chat.ActionAddMembers:    "addMember",
	chat.ActionRemoveMembers: "delMember",
	chat.ActionGrantAdmin:    "addAdmin",
	chat.ActionRevokeAdmin:   "delAdmin",
	chat.ActionSetMedia:      "uploadAvatar",
	chat.ActionDeleteMedia:   "delAvatar",
	chat.ActionDeleteMessage: "delMessage",
}

// actionName returns the op of a notification ("" for none).
func actionName(a chat.Action) string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return ""
}
