package sipserver

import (
	"context"
	"fmt"
	"mime"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
)

// Chat is the group chat engine as the SIP side uses it.
type Chat interface {
	SendMessage(ctx context.Context, c chat.Caller, p chat.Post) (chat.MID, error)
	StoreDirect(ctx context.Context, c chat.Caller, d chat.Direct) (chat.MID, error)
	GetGroup(ctx context.Context, c chat.Caller, id chat.GroupID) (chat.GroupView, error)
	Join(ctx context.Context, c chat.Caller, id chat.GroupID, dn string) error
	Leave(ctx context.Context, c chat.Caller, id chat.GroupID, dn string) error
	SetSubject(ctx context.Context, c chat.Caller, id chat.GroupID, subject, dn string, action chat.Action) error
	ConfirmMessage(ctx context.Context, c chat.Caller, id chat.GroupID, mid chat.MID) error
	ReadMessage(ctx context.Context, c chat.Caller, id chat.GroupID, mid chat.MID) error
	TypingRecipients(ctx context.Context, c chat.Caller, id chat.GroupID) ([]string, error)
}

// groupID parses the user part of a group address, gc-<GID>.
func groupID(user string) (chat.GroupID, bool) {
	if !strings.HasPrefix(strings.ToLower(user), chat.GroupUserPrefix) {
		return 0, false
	}
	n, err := strconv.ParseUint(user[len(chat.GroupUserPrefix):], 10, 32)
	if err != nil {
		return 0, false
	}
	return chat.GroupID(n), true
}

// isGroupUser reports whether a Request-URI user names a group.
func isGroupUser(user string) bool {
	return strings.HasPrefix(strings.ToLower(user), chat.GroupUserPrefix)
}

// textBody checks that a MESSAGE carries text a chat can keep: text/plain
// (or no type), UTF-8 without NUL.
func textBody(req *sip.Request) (string, *sip.Response) {
	if ct := req.ContentType(); ct != nil {
		mt, params, err := mime.ParseMediaType(ct.Value())
		if err != nil || mt != "text/plain" || (params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8")) {
			res := newResponse(req, 415, "Unsupported Media Type")
			res.AppendHeader(sip.NewHeader("Accept", "text/plain"))
			return "", res
		}
	}
	body := req.Body()
	if len(body) == 0 {
		return "", newResponse(req, 400, "Empty Message")
	}
	if !utf8.Valid(body) || strings.IndexByte(string(body), 0) >= 0 {
		return "", newResponse(req, 400, "Message Is Not UTF-8 Text")
	}
	return string(body), nil
}

// fromDisplayName returns the display name of the From header, or "" when
// it is not acceptable text (the account's name is used then).
func fromDisplayName(req *sip.Request) string {
	f := req.From()
	if f == nil {
		return ""
	}
	dn := strings.ReplaceAll(strings.ReplaceAll(f.DisplayName, `\"`, `"`), `\\`, `\`)
	for _, r := range dn {
		if r < 0x20 || r == 0x7f {
			return ""
		}
	}
	if utf8.RuneCountInString(dn) > chat.MaxDisplayNameChars || !utf8.ValidString(dn) {
		return ""
	}
	return dn
}

// onGroupRequest handles a request to a group's address from an
// authenticated member: a MESSAGE posts to the group (or runs a command).
func (s *Server) onGroupRequest(ctx context.Context, req *sip.Request, sender string) *sip.Response {
	id, ok := groupID(req.Recipient.User)
	if !ok {
		return newResponse(req, 404, "Not Found")
	}
	if req.Method != sip.MESSAGE {
		res := newResponse(req, 405, "Method Not Allowed")
		res.AppendHeader(sip.NewHeader("Allow", "MESSAGE"))
		return res
	}
	// A delivery of ours that comes back (a phone forwarding what it
	// receives) must not be posted again: that would loop.
	if header(req, "X-GC-MID") != nil || (req.From() != nil && isGroupUser(req.From().Address.User)) {
		return newResponse(req, 403, "Forbidden: Group Deliveries Are Not Posted Back")
	}
	if isIMDN(req) {
		return s.onGroupIMDN(ctx, req, sender, id)
	}
	if isComposing(req) {
		return s.onGroupTyping(ctx, req, sender, id)
	}
	text, bad := textBody(req)
	if bad != nil {
		return bad
	}
	caller := chat.Caller{Login: sender}
	// A From without a display name posts under the account's name, as
	// the API does; the lookup is the one authentication just cached.
	if acc, err := s.accounts.Lookup(ctx, sender); err == nil {
		caller.DisplayName = acc.DisplayName
	}
	if cmd, arg, ok := command(text); ok {
		s.runCommand(req, caller, id, cmd, arg)
		return newResponse(req, 200, "OK")
	}
	if strings.HasPrefix(text, "~[GC ") {
		return newResponse(req, 403, "Forbidden: Notifications Are Not Posted")
	}
	mid, err := s.chat.SendMessage(ctx, caller, chat.Post{Group: id, DisplayName: fromDisplayName(req), Text: text,
		Origin: flowKey(strings.ToUpper(req.Transport()), req.Source())})
	if err != nil {
		return s.refuse(req, err, "post to group", "group", id, "login", sender)
	}
	res := newResponse(req, 202, "Accepted")
	res.AppendHeader(sip.NewHeader("X-GC-MID", strconv.FormatUint(uint64(mid), 10)))
	return res
}

// command recognises the commands a plain phone can type: the body is
// exactly #join, #leave, #members, #help or #subject followed by text.
func command(text string) (cmd, arg string, ok bool) {
	t := strings.TrimSpace(text)
	if !strings.HasPrefix(t, "#") {
		return "", "", false
	}
	cmd, arg, _ = strings.Cut(t, " ")
	cmd = strings.ToLower(cmd)
	switch cmd {
	case "#join", "#leave", "#members", "#help":
		return cmd, "", strings.TrimSpace(arg) == ""
	case "#subject":
		return cmd, strings.TrimSpace(arg), true
	}
	return "", "", false
}

const commandHelp = "Commands: #join (accept the invitation), #leave, #members, #subject <new subject>, #help. Anything else is posted to the group."

// runCommand acts on a command and answers with a MESSAGE from the group
// to the device that sent it.
func (s *Server) runCommand(req *sip.Request, c chat.Caller, id chat.GroupID, cmd, arg string) {
	ctx, cancel := context.WithTimeout(chat.WithSource(context.Background(), "sip"), 10*time.Second)
	defer cancel()
	var answer string
	var err error
	switch cmd {
	case "#join":
		if err = s.chat.Join(ctx, c, id, fromDisplayName(req)); err == nil {
			answer = "You joined the group."
		}
	case "#leave":
		if err = s.chat.Leave(ctx, c, id, ""); err == nil {
			answer = "You left the group."
		}
	case "#subject":
		if err = s.chat.SetSubject(ctx, c, id, arg, "", chat.ActionSetSubject); err == nil {
			answer = "Subject set to: " + arg
		}
	case "#members":
		var v chat.GroupView
		if v, err = s.chat.GetGroup(ctx, c, id); err == nil {
			answer = membersText(v)
		}
	default:
		answer = commandHelp
	}
	if err != nil {
		answer = failedCommandText(err)
	}
	s.send.messageDevice(req, id, answer)
}

func membersText(v chat.GroupView) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:", v.Group.Subject)
	status := map[chat.Status]string{chat.StatusJoined: "joined", chat.StatusWaiting: "invited", chat.StatusLeft: "left"}
	for _, m := range v.Members {
		if m.Status == chat.StatusLeft {
			continue
		}
		fmt.Fprintf(&b, "\n%s (%s) %s", m.DisplayName, m.Login, status[m.Status])
		if m.Admin {
			b.WriteString(", admin")
		}
		if m.Login == v.Group.Owner {
			b.WriteString(", owner")
		}
	}
	return b.String()
}
