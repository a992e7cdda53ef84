package chat

import (
	"context"
	"fmt"
)

// TypingRecipients returns whom a member's typing notice (RFC 3994
// isComposing) in a group is for: the other joined members with an
// account. Only a joined member may send one; the others get what a post
// would give them (ErrNotJoined, ErrNotMember, ErrNoGroup). A notice is no
// event: it has no MID and nothing of it is written, so this only reads.
func (s *Service) TypingRecipients(ctx context.Context, c Caller, id GroupID) ([]string, error) {
	if _, err := s.store.Group(ctx, id); err != nil {
		return nil, err
	}
	members, err := s.store.Members(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load members of %d: %w", id, err)
	}
	st := &groupState{members: members}
	me, ok := st.member(c.Login)
	if !ok {
		return nil, ErrNotMember
	}
	st.me = me
	if err := requireJoined(st); err != nil {
		return nil, err
	}
	return st.logins(func(m Member) bool { return isJoined(m) && m.Login != c.Login }), nil
}
