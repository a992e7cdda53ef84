package httpapi

import (
	"context"
	"encoding/json"
	"fmt"

	"gchd/chat"
)

// methodTable maps each normalised gm to its method.
func methodTable() map[string]method {
	list := []method{
		{"addGroup", addGroup},
		{"getGroup", getGroup},
		{"getCommonGroups", getCommonGroups},
		{"getMyGroups", getMyGroups},
		{"delGroup", delGroup},
		{"setGroupSubject", setSubject(chat.ActionSetSubject)},
		{"editGroup", setSubject(chat.ActionEditGroup)},
		{"joinGroup", joinGroup},
		{"leaveGroup", leaveGroup},
		{"sendMessage", sendMessage},
		{"confMessage", receipt(false)},
		{"readMessage", receipt(true)},
		{"readUpTo", readUpTo},
		{"delMessage", delMessage},
		{"getMessageInfo", getMessageInfo},
		{"getMessages", getMessages},
		{"addMember", addMember},
		{"delMember", delMember},
		{"addAdmin", setAdmins(true)},
		{"delAdmin", setAdmins(false)},
		{"uploadAvatar", uploadAvatar},
		{"downloadAvatar", downloadAvatar},
		{"delAvatar", delAvatar},
	}
	t := make(map[string]method, len(list))
	for _, m := range list {
		t[methodKey(m.name)] = m
	}
	return t
}

// params are the pm fields of every method; pointers tell a missing field
// from a zero value. Numbers and booleans are of the flex types (pmjson.go),
// which also take them as strings, as the reference did.
type params struct {
	ID    *flexUint32     `json:"id"`
	DN    string          `json:"dn"`
	GS    *string         `json:"gs"`
	GM    json.RawMessage `json:"gm"`
	L     *string         `json:"l"`
	MB    *string         `json:"mb"`
	MID   *flexUint64     `json:"mid"`
	T     string          `json:"t"`
	After *flexUint64     `json:"after"`
	// Before and Latest page getMessages backward from a MID or from the
	// end of the log.
	Before *flexUint64 `json:"before"`
	Latest flexBool    `json:"latest"`
	Limit  flexInt     `json:"limit"`
}

func missing(name string) error { return fmt.Errorf("%w: %s is missing", chat.ErrInvalid, name) }

// parse decodes pm and checks that the named fields are present.
func parse(c call, required ...string) (params, error) {
	var p params
	if err := decodePM(c.pm, &p); err != nil {
		return p, err
	}
	for _, name := range required {
		absent := false
		switch name {
		case "id":
			absent = p.ID == nil
		case "gs":
			absent = p.GS == nil
		case "gm":
			absent = len(p.GM) == 0 || string(p.GM) == "null"
		case "l":
			absent = p.L == nil
		case "mb":
			absent = p.MB == nil
		case "mid":
			absent = p.MID == nil
		}
		if absent {
			return p, missing(name)
		}
	}
	return p, nil
}

// invitees decodes gm as [{"l": login, "dn": name}, ...].
func invitees(raw json.RawMessage) ([]chat.Invitee, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []struct {
		L  *string `json:"l"`
		DN string  `json:"dn"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%w: gm: %v", chat.ErrInvalid, err)
	}
	out := make([]chat.Invitee, len(list))
	for i, m := range list {
		if m.L == nil {
			return nil, missing(fmt.Sprintf("gm[%d].l", i))
		}
		out[i] = chat.Invitee{Login: *m.L, DisplayName: m.DN}
	}
	return out, nil
}

// logins decodes gm as ["login", ...].
func logins(raw json.RawMessage) ([]string, error) {
	var list []string
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("%w: gm: %v", chat.ErrInvalid, err)
	}
	return list, nil
}

// groupSummary is a group in the lists of getCommonGroups and getMyGroups.
type groupSummary struct {
	ID uint32 `json:"id"`
	GS string `json:"gs"`
	GO string `json:"go"`
	TS string `json:"ts"`
	AE string `json:"ae"`
	AT string `json:"at"`
}

func summaries(gs []chat.Group) []groupSummary {
	out := make([]groupSummary, len(gs))
	for i, g := range gs {
		out[i] = groupSummary{ID: uint32(g.ID), GS: g.Subject, GO: g.Owner, TS: timestamp(g.Created), AE: flag(g.HasAvatar()), AT: timestamp(g.AvatarAt)}
	}
	return out
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func addGroup(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "gs")
	if err != nil {
		return result{}, err
	}
	inv, err := invitees(p.GM)
	if err != nil {
		return result{}, err
	}
	id, err := s.chat.AddGroup(ctx, c.caller, *p.GS, p.DN, inv)
	if err != nil {
		return result{}, err
	}
	return result{json: map[string]uint32{"id": uint32(id)}}, nil
}

type memberJSON struct {
	L  string `json:"l"`
	A  bool   `json:"a"`
	DN string `json:"dn"`
	S  string `json:"s"`
	TS string `json:"ts"`
}

type guestJSON struct {
	L  string `json:"l"`
	DN string `json:"dn"`
	TS string `json:"ts"`
}

type groupJSON struct {
	GS string       `json:"gs"`
	GO string       `json:"go"`
	TS string       `json:"ts"`
	AE string       `json:"ae"`
	AT string       `json:"at"`
	VE string       `json:"ve"`
	VT string       `json:"vt"`
	GM []memberJSON `json:"gm"`
	GG []guestJSON  `json:"gg"`
}

func getGroup(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	v, err := s.chat.GetGroup(ctx, c.caller, chat.GroupID(*p.ID))
	if err != nil {
		return result{}, err
	}
	g := v.Group
	out := groupJSON{
		GS: g.Subject, GO: g.Owner, TS: timestamp(g.Created),
		AE: flag(g.HasAvatar()), AT: timestamp(g.AvatarAt), VE: flag(g.HasVideo()), VT: timestamp(g.VideoAt),
		GM: []memberJSON{}, GG: []guestJSON{},
	}
	for _, m := range v.Members {
		switch {
		case !m.Guest():
			out.GM = append(out.GM, memberJSON{L: m.Login, A: m.Admin, DN: m.DisplayName, S: string(m.Status), TS: timestamp(m.Since)})
		case m.Status.Active():
			out.GG = append(out.GG, guestJSON{L: m.Login, DN: m.DisplayName, TS: timestamp(m.Since)})
		}
	}
	return result{json: out}, nil
}

func getCommonGroups(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "l")
	if err != nil {
		return result{}, err
	}
	gs, err := s.chat.CommonGroups(ctx, c.caller, *p.L)
	if err != nil {
		return result{}, err
	}
	return result{json: summaries(gs)}, nil
}

// myGroupJSON is a group in getMyGroups: its summary, where its log ends
// and what the caller has not read.
type myGroupJSON struct {
	groupSummary
	LM uint64 `json:"lm"`
	LT string `json:"lt"`
	UN int    `json:"un"`
	RM uint64 `json:"rm"`
}

func getMyGroups(ctx context.Context, s *Server, c call) (result, error) {
	gs, err := s.chat.MyGroups(ctx, c.caller)
	if err != nil {
		return result{}, err
	}
	out := make([]myGroupJSON, len(gs))
	for i, g := range gs {
		out[i] = myGroupJSON{groupSummary: summaries([]chat.Group{g.Group})[0],
			LM: uint64(g.LastMID), LT: timestamp(g.LastAt), UN: g.Unread, RM: uint64(g.ReadMID)}
	}
	return result{json: out}, nil
}

func delGroup(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.DeleteGroup(ctx, c.caller, chat.GroupID(*p.ID), p.DN)
}

func setSubject(action chat.Action) func(context.Context, *Server, call) (result, error) {
	return func(ctx context.Context, s *Server, c call) (result, error) {
		p, err := parse(c, "id", "gs")
		if err != nil {
			return result{}, err
		}
		return result{}, s.chat.SetSubject(ctx, c.caller, chat.GroupID(*p.ID), *p.GS, p.DN, action)
	}
}

func joinGroup(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.Join(ctx, c.caller, chat.GroupID(*p.ID), p.DN)
}

func leaveGroup(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.Leave(ctx, c.caller, chat.GroupID(*p.ID), p.DN)
}

func sendMessage(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "mb")
	if err != nil {
		return result{}, err
	}
	mid, err := s.chat.SendMessage(ctx, c.caller, chat.Post{Group: chat.GroupID(*p.ID), DisplayName: p.DN, Text: *p.MB})
	if err != nil {
		return result{}, err
	}
	return result{mid: mid}, nil
}

func receipt(read bool) func(context.Context, *Server, call) (result, error) {
	return func(ctx context.Context, s *Server, c call) (result, error) {
		p, err := parse(c, "id", "mid")
		if err != nil {
			return result{}, err
		}
		if read {
			return result{}, s.chat.ReadMessage(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.MID))
		}
		return result{}, s.chat.ConfirmMessage(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.MID))
	}
}

func readUpTo(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "mid")
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.ReadUpTo(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.MID))
}

func delMessage(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "mid")
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.DeleteMessage(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.MID), p.DN)
}

type receiptJSON struct {
	L  string `json:"l"`
	CF string `json:"cf"`
	RD string `json:"rd"`
}

func getMessageInfo(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "mid")
	if err != nil {
		return result{}, err
	}
	rs, err := s.chat.MessageInfo(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.MID))
	if err != nil {
		return result{}, err
	}
	out := make([]receiptJSON, len(rs))
	for i, r := range rs {
		out[i] = receiptJSON{L: r.Login, CF: timestamp(r.Confirmed), RD: timestamp(r.Read)}
	}
	return result{json: out}, nil
}

type eventJSON struct {
	MID uint64 `json:"mid"`
	K   string `json:"k"`
	L   string `json:"l"`
	DN  string `json:"dn"`
	MB  string `json:"mb,omitempty"`
	Op  string `json:"op,omitempty"`
	Ref uint64 `json:"ref,omitempty"`
	Del bool   `json:"del,omitempty"`
	TS  string `json:"ts"`
}

func getMessages(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	var (
		evs  []chat.Event
		more bool
	)
	// Each names where the page is: from the start forward (after), from
	// a MID backward (before) or from the end backward (latest).
	switch {
	case bool(p.Latest) && (p.Before != nil || p.After != nil):
		return result{}, fmt.Errorf("%w: latest goes with neither before nor after", chat.ErrInvalid)
	case p.Before != nil && p.After != nil:
		return result{}, fmt.Errorf("%w: before and after together", chat.ErrInvalid)
	case p.Before != nil && *p.Before == 0:
		return result{}, fmt.Errorf("%w: before 0 names no page", chat.ErrInvalid)
	case bool(p.Latest):
		evs, more, err = s.chat.MessagesBefore(ctx, c.caller, chat.GroupID(*p.ID), 0, int(p.Limit))
	case p.Before != nil:
		evs, more, err = s.chat.MessagesBefore(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(*p.Before), int(p.Limit))
	default:
		var after flexUint64
		if p.After != nil {
			after = *p.After
		}
		evs, more, err = s.chat.Messages(ctx, c.caller, chat.GroupID(*p.ID), chat.MID(after), int(p.Limit))
	}
	if err != nil {
		return result{}, err
	}
	out := struct {
		M    []eventJSON `json:"m"`
		More bool        `json:"more"`
	}{M: make([]eventJSON, len(evs)), More: more}
	for i, ev := range evs {
		out.M[i] = encodeEvent(ev)
	}
	return result{json: out}, nil
}

// encodeEvent is an entry of the log as getMessages and the event streams
// show it.
func encodeEvent(ev chat.Event) eventJSON {
	e := eventJSON{MID: uint64(ev.MID), K: string(ev.Kind), L: ev.Sender, DN: ev.SenderDN, Ref: uint64(ev.Ref), Del: ev.Deleted, TS: timestamp(ev.Time)}
	if ev.Kind == chat.KindMessage {
		e.MB = ev.Body
	} else {
		e.Op = actionName(ev.Action)
	}
	return e
}

func addMember(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "gm")
	if err != nil {
		return result{}, err
	}
	inv, err := invitees(p.GM)
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.AddMembers(ctx, c.caller, chat.GroupID(*p.ID), p.DN, inv)
}

func delMember(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id", "gm")
	if err != nil {
		return result{}, err
	}
	ls, err := logins(p.GM)
	if err != nil {
		return result{}, err
	}
	return result{}, s.chat.RemoveMembers(ctx, c.caller, chat.GroupID(*p.ID), p.DN, ls)
}

func setAdmins(admin bool) func(context.Context, *Server, call) (result, error) {
	return func(ctx context.Context, s *Server, c call) (result, error) {
		p, err := parse(c, "id", "gm")
		if err != nil {
			return result{}, err
		}
		ls, err := logins(p.GM)
		if err != nil {
			return result{}, err
		}
		return result{}, s.chat.SetAdmins(ctx, c.caller, chat.GroupID(*p.ID), p.DN, ls, admin)
	}
}

func uploadAvatar(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	kind, err := chat.ParseMediaKind(p.T)
	if err != nil {
		return result{}, err
	}
	if c.file == nil {
		return result{}, missing("file")
	}
	at, err := s.chat.SetMedia(ctx, c.caller, chat.GroupID(*p.ID), kind, c.file, p.DN)
	if err != nil {
		return result{}, err
	}
	return result{json: map[string]string{"at": timestamp(at)}}, nil
}

func downloadAvatar(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	kind, err := chat.ParseMediaKind(p.T)
	if err != nil {
		return result{}, err
	}
	m, err := s.chat.GetMedia(ctx, c.caller, chat.GroupID(*p.ID), kind)
	if err != nil {
		return result{}, err
	}
	return result{media: &m}, nil
}

func delAvatar(ctx context.Context, s *Server, c call) (result, error) {
	p, err := parse(c, "id")
	if err != nil {
		return result{}, err
	}
	kind, err := chat.ParseMediaKind(p.T)
	if err != nil {
		return result{}, err
	}
	at, err := s.chat.DeleteMedia(ctx, c.caller, chat.GroupID(*p.ID), kind, p.DN)
	if err != nil {
		return result{}, err
	}
	return result{json: map[string]string{"at": timestamp(at)}}, nil
}
