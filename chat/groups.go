package chat

import (
	"context"
	"fmt"
	"slices"
)

// GroupView is a group with its member rows, as getGroup shows it.
type GroupView struct {
	Group   Group
	Members []Member
}

// AddGroup creates a group owned by the caller, who joins it as admin; the
// invitees wait. Every participant, the invited included, is sent NG.
func (s *Service) AddGroup(ctx context.Context, c Caller, subject, dn string, invitees []Invitee) (GroupID, error) {
	if err := checkSubject(subject); err != nil {
		return 0, err
	}
	if err := checkDisplayName(dn); err != nil {
		return 0, err
	}
	invitees, err := checkInvitees(c.Login, invitees)
	if err != nil {
		return 0, err
	}
	if 1+len(invitees) > s.limits.MaxParticipants {
		return 0, fmt.Errorf("%w: %d participants, at most %d", ErrTooManyParticipants, 1+len(invitees), s.limits.MaxParticipants)
	}
	var id GroupID
	err = s.update(ctx, func(ch *change) error {
		now := s.clock()
		if err := s.lockQuotas(ctx, ch.tx, c.Login); err != nil {
			return err
		}
		if err := s.checkCreation(ctx, ch.tx, c.Login, now); err != nil {
			return err
		}
		// Guests have no deliveries: counting them costs nothing.
		logins := make([]string, len(invitees))
		for i, inv := range invitees {
			logins[i] = inv.Login
		}
		if err := s.checkPending(ctx, ch.tx, c.Login, logins); err != nil {
			return err
		}
		id, err = ch.tx.CreateGroup(ctx, Group{Subject: subject, Owner: c.Login, Created: now})
		if err != nil {
			return fmt.Errorf("create group: %w", err)
		}
		owner := Member{Group: id, Login: c.Login, DisplayName: displayName(dn, c), Status: StatusJoined, Admin: true, Since: now}
		if err := ch.tx.PutMember(ctx, owner); err != nil {
			return fmt.Errorf("add owner: %w", err)
		}
		for _, inv := range invitees {
			m := Member{Group: id, Login: inv.Login, DisplayName: orLogin(inv.DisplayName, inv.Login), Status: StatusWaiting, Since: now}
			if err := ch.tx.PutMember(ctx, m); err != nil {
				return fmt.Errorf("add member %s: %w", inv.Login, err)
			}
		}
		// Read back: the store knows which logins have accounts.
		members, err := ch.tx.Members(ctx, id)
		if err != nil {
			return fmt.Errorf("load members of %d: %w", id, err)
		}
		st := groupState{group: Group{ID: id}, members: members}
		_, err = ch.emit(ctx, Event{Group: id, Kind: KindNewGroup, Sender: c.Login, SenderDN: owner.DisplayName, Action: ActionCreateGroup, Time: now}, st.logins(isActive))
		return err
	})
	if err != nil {
		return 0, s.observeQuota(err)
	}
	return id, nil
}

// GetGroup returns a group to one of its waiting or joined members.
func (s *Service) GetGroup(ctx context.Context, c Caller, id GroupID) (GroupView, error) {
	g, err := s.store.Group(ctx, id)
	if err != nil {
		return GroupView{}, err
	}
	members, err := s.store.Members(ctx, id)
	if err != nil {
		return GroupView{}, fmt.Errorf("load members of %d: %w", id, err)
	}
	i := slices.IndexFunc(members, func(m Member) bool { return m.Login == c.Login })
	if i < 0 || !members[i].Status.Active() {
		return GroupView{}, ErrNotMember
	}
	return GroupView{Group: g, Members: members}, nil
}

// CommonGroups lists the groups in which both the caller and other take part.
func (s *Service) CommonGroups(ctx context.Context, c Caller, other string) ([]Group, error) {
	if !ValidLogin(other) {
		return nil, invalid("login %q is not valid", other)
	}
	if other == c.Login {
		return s.store.GroupsWith(ctx, c.Login)
	}
	return s.store.GroupsWith(ctx, c.Login, other)
}

// MyGroups lists the groups in which the caller takes part, with where
// each log ends and how many of its messages the caller has not read.
func (s *Service) MyGroups(ctx context.Context, c Caller) ([]MemberGroup, error) {
	return s.store.GroupsOf(ctx, c.Login)
}

// DeleteGroup deletes a group with its history; only its owner may. Every
// participant is sent DG, which is all that is kept of the group until it
// has been delivered.
func (s *Service) DeleteGroup(ctx context.Context, c Caller, id GroupID, dn string) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if st.group.Owner != c.Login || st.me.Status != StatusJoined {
			return ErrNotAllowed
		}
		ev := Event{Group: id, Kind: KindDeleteGroup, Sender: c.Login, SenderDN: displayName(dn, c), Action: ActionDeleteGroup, Time: s.clock()}
		if _, err := ch.emit(ctx, ev, st.logins(isActive)); err != nil {
			return err
		}
		if err := ch.tx.DeleteGroup(ctx, id); err != nil {
			return fmt.Errorf("delete group %d: %w", id, err)
		}
		return nil
	})
}

// SetSubject changes a group's subject; action (ActionSetSubject or
// ActionEditGroup) is what the log records. Admins only. Joined members are
// sent EG.
func (s *Service) SetSubject(ctx context.Context, c Caller, id GroupID, subject, dn string, action Action) error {
	if err := checkSubject(subject); err != nil {
		return err
	}
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		if st.group.Subject == subject {
			return nil
		}
		st.group.Subject = subject
		if err := ch.tx.UpdateGroup(ctx, st.group); err != nil {
			return fmt.Errorf("update group %d: %w", id, err)
		}
		return s.emitEdit(ctx, ch, st, c, dn, action, nil)
	})
}

// Join turns the caller's invitation into membership. Joining again is a no-op.
func (s *Service) Join(ctx context.Context, c Caller, id GroupID, dn string) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		switch st.me.Status {
		case StatusJoined:
			return nil
		case StatusLeft:
			return ErrNotMember
		}
		me := st.me
		me.Status = StatusJoined
		me.Since = s.clock()
		if dn != "" {
			me.DisplayName = dn
		}
		if err := st.put(ctx, ch.tx, me); err != nil {
			return err
		}
		if err := s.settleRoles(ctx, ch.tx, st); err != nil {
			return err
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionJoin, nil)
	})
}

// Leave takes the caller out of a group (or declines an invitation).
func (s *Service) Leave(ctx context.Context, c Caller, id GroupID, dn string) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if !st.me.Status.Active() {
			return ErrNotMember
		}
		me := st.me
		me.Status, me.Admin, me.Since = StatusLeft, false, s.clock()
		if err := st.put(ctx, ch.tx, me); err != nil {
			return err
		}
		if err := s.settleRoles(ctx, ch.tx, st); err != nil {
			return err
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionLeave, nil)
	})
}

// AddMembers invites logins to a group (again, for those who left). Admins
// only. The invited are sent NG, the joined members EG.
func (s *Service) AddMembers(ctx context.Context, c Caller, id GroupID, dn string, invitees []Invitee) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	invitees, err := checkInvitees(c.Login, invitees)
	if err != nil {
		return err
	}
	if len(invitees) == 0 {
		return invalid("no members given")
	}
	return s.observeQuota(s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		now := s.clock()
		var added []string
		for _, inv := range invitees {
			if m, ok := st.member(inv.Login); ok && m.Status.Active() {
				continue
			}
			m := Member{Group: id, Login: inv.Login, DisplayName: orLogin(inv.DisplayName, inv.Login), Status: StatusWaiting, Since: now}
			if err := st.put(ctx, ch.tx, m); err != nil {
				return err
			}
			added = append(added, inv.Login)
		}
		if len(added) == 0 {
			return nil
		}
		if n := st.count(isActive); n > s.limits.MaxParticipants {
			return fmt.Errorf("%w: %d participants, at most %d", ErrTooManyParticipants, n, s.limits.MaxParticipants)
		}
		if err := s.lockQuotas(ctx, ch.tx, c.Login); err != nil {
			return err
		}
		if err := s.checkPending(ctx, ch.tx, c.Login, added); err != nil {
			return err
		}
		// Re-read so that HasAccount is known for the new rows.
		if st.members, err = ch.tx.Members(ctx, id); err != nil {
			return fmt.Errorf("load members of %d: %w", id, err)
		}
		invited := st.logins(func(m Member) bool { return slices.Contains(added, m.Login) })
		ng := Event{Group: id, Kind: KindNewGroup, Sender: c.Login, SenderDN: displayName(dn, c), Action: ActionAddMembers, Time: now}
		if _, err := ch.emit(ctx, ng, invited); err != nil {
			return err
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionAddMembers, nil)
	}))
}

// RemoveMembers takes logins out of a group. Admins only; the owner cannot be
// removed. Joined members, the removed ones included, are sent EG.
func (s *Service) RemoveMembers(ctx context.Context, c Caller, id GroupID, dn string, logins []string) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	logins, err := checkLogins(logins)
	if err != nil {
		return err
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		var removed []string
		changed := false
		for _, l := range logins {
			m, ok := st.member(l)
			if !ok {
				return fmt.Errorf("%w: %s", ErrNotMember, l)
			}
			if l == st.group.Owner && l != c.Login {
				return fmt.Errorf("%w: the owner cannot be removed", ErrNotAllowed)
			}
			if !m.Status.Active() {
				continue
			}
			changed = true
			if m.Status == StatusJoined {
				removed = append(removed, l)
			}
			m.Status, m.Admin, m.Since = StatusLeft, false, s.clock()
			if err := st.put(ctx, ch.tx, m); err != nil {
				return err
			}
		}
		if !changed {
			return nil
		}
		if err := s.settleRoles(ctx, ch.tx, st); err != nil {
			return err
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionRemoveMembers, removed)
	})
}

// SetAdmins grants (admin true) or revokes admin rights. Admins only; rights
// go to joined members only, and the owner keeps them.
func (s *Service) SetAdmins(ctx context.Context, c Caller, id GroupID, dn string, logins []string, admin bool) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	logins, err := checkLogins(logins)
	if err != nil {
		return err
	}
	action := ActionRevokeAdmin
	if admin {
		action = ActionGrantAdmin
	}
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		changed := false
		for _, l := range logins {
			m, ok := st.member(l)
			if !ok || (admin && m.Status != StatusJoined) {
				return fmt.Errorf("%w: %s", ErrNotMember, l)
			}
			if !admin && l == st.group.Owner {
				return fmt.Errorf("%w: the owner stays admin", ErrNotAllowed)
			}
			if m.Admin == admin {
				continue
			}
			m.Admin = admin
			if err := st.put(ctx, ch.tx, m); err != nil {
				return err
			}
			changed = true
		}
		if !changed {
			return nil
		}
		if err := s.settleRoles(ctx, ch.tx, st); err != nil {
			return err
		}
		return s.emitEdit(ctx, ch, st, c, dn, action, nil)
	})
}

// settleRoles keeps a group manageable: when no joined admin is left the
// longest-joined member becomes admin, and when the owner is no longer joined
// owner rights pass to the longest-joined admin.
func (s *Service) settleRoles(ctx context.Context, tx Tx, st *groupState) error {
	senior := func(keep func(Member) bool) (Member, bool) {
		var best Member
		found := false
		for _, m := range st.members {
			if m.Status != StatusJoined || !keep(m) {
				continue
			}
			if !found || m.Since.Before(best.Since) || (m.Since.Equal(best.Since) && m.Login < best.Login) {
				best, found = m, true
			}
		}
		return best, found
	}
	if st.count(func(m Member) bool { return m.Status == StatusJoined && m.Admin }) == 0 {
		if m, ok := senior(func(Member) bool { return true }); ok {
			m.Admin = true
			if err := st.put(ctx, tx, m); err != nil {
				return err
			}
		}
	}
	if owner, ok := st.member(st.group.Owner); !ok || owner.Status != StatusJoined {
		if m, ok := senior(func(m Member) bool { return m.Admin }); ok {
			st.group.Owner = m.Login
			if err := tx.UpdateGroup(ctx, st.group); err != nil {
				return fmt.Errorf("pass ownership of %d: %w", st.group.ID, err)
			}
		}
	}
	return nil
}

// emitEdit records an EG event for the joined members and for extra (members
// who were joined until this change).
func (s *Service) emitEdit(ctx context.Context, ch *change, st *groupState, c Caller, dn string, action Action, extra []string) error {
	recipients := st.logins(isJoined)
	for _, l := range extra {
		if m, ok := st.member(l); ok && m.HasAccount && !slices.Contains(recipients, l) {
			recipients = append(recipients, l)
		}
	}
	ev := Event{Group: st.group.ID, Kind: KindEditGroup, Sender: c.Login, SenderDN: displayName(dn, c), Action: action, Time: s.clock()}
	_, err := ch.emit(ctx, ev, recipients)
	return err
}

func orLogin(dn, login string) string {
	if dn == "" {
		return login
	}
	return dn
}
