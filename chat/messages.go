package chat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Post is a message to a group.
type Post struct {
	Group       GroupID
	DisplayName string // the sender's dn for this message
	Text        string
	// Origin names the device it came from (a SIP flow); "" from the API.
	Origin string
}

// SendMessage appends a message to a group's log and returns its MID. Only
// joined members may post. The message is due to every other joined member:
// the sender is no recipient, so nothing of her own waits for her devices
// (copies to them, where turned on, are the Dispatcher's and never stored).
func (s *Service) SendMessage(ctx context.Context, c Caller, p Post) (MID, error) {
	if err := s.checkText(p.Text); err != nil {
		return 0, err
	}
	if err := checkDisplayName(p.DisplayName); err != nil {
		return 0, err
	}
	var mid MID
	err := s.updateIn(ctx, p.Group, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, p.Group, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireJoined(st); err != nil {
			return err
		}
		ev := Event{Group: p.Group, Kind: KindMessage, Sender: c.Login, SenderDN: displayName(p.DisplayName, c), Body: p.Text,
			Time: s.clock(), Origin: p.Origin}
		mid, err = ch.emit(ctx, ev, st.logins(func(m Member) bool { return isJoined(m) && m.Login != c.Login }))
		return err
	})
	return mid, err
}

// ConfirmMessage records that the caller received a message (cf), or
// settles the caller's delivery of a notification.
func (s *Service) ConfirmMessage(ctx context.Context, c Caller, id GroupID, mid MID) error {
	return s.receipt(ctx, c, id, mid, false)
}

// ReadMessage records that the caller read a message (rd, and cf if unset),
// or settles the caller's delivery of a notification. Reading the newest
// message moves the caller's read marker to it.
func (s *Service) ReadMessage(ctx context.Context, c Caller, id GroupID, mid MID) error {
	return s.receipt(ctx, c, id, mid, true)
}

func (s *Service) receipt(ctx context.Context, c Caller, id GroupID, mid MID, read bool) error {
	return s.update(ctx, func(ch *change) error {
		now := s.clock()
		var rd time.Time
		if read {
			rd = now
		}
		ev, evErr := ch.tx.Event(ctx, mid)
		if evErr != nil && !errors.Is(evErr, ErrNoMessage) {
			return fmt.Errorf("load event %d: %w", mid, evErr)
		}
		if evErr == nil && ev.Group == id && (ev.Kind.IsNotification() || ev.Deleted) {
			// A client may confirm every ~[GC ...] it receives; a DM
			// carries the deleted message's MID. The delivery shows the
			// notification was the caller's, whatever her status now: NG
			// reaches the invited, DG outlives the group.
			settled, err := ch.tx.SettleNotice(ctx, id, mid, c.Login, now, rd)
			if err != nil {
				return fmt.Errorf("settle notification %d for %s: %w", mid, c.Login, err)
			}
			if settled {
				return nil
			}
		}
		st, err := s.lock(ctx, ch.tx, id, c.Login, false)
		if err != nil {
			return err
		}
		if err := requireJoined(st); err != nil {
			return err
		}
		if evErr != nil || ev.Group != id || ev.Kind != KindMessage || ev.Deleted {
			return ErrNoMessage
		}
		if err := ch.tx.SetReceipt(ctx, mid, c.Login, now, rd); err != nil {
			return fmt.Errorf("set receipt of %d for %s: %w", mid, c.Login, err)
		}
		if read {
			if err := ch.tx.ReadNewest(ctx, id, c.Login, mid); err != nil {
				return fmt.Errorf("move read marker of %s to %d: %w", c.Login, mid, err)
			}
		}
		return nil
	})
}

// ReadUpTo marks every message of the group up to mid read for the caller,
// as ReadMessage would one by one, and moves her read marker to mid. mid is
// any event of the group's log (a client passes getMyGroups' lm).
func (s *Service) ReadUpTo(ctx context.Context, c Caller, id GroupID, mid MID) error {
	return s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, false)
		if err != nil {
			return err
		}
		if err := requireJoined(st); err != nil {
			return err
		}
		ev, err := ch.tx.Event(ctx, mid)
		if errors.Is(err, ErrNoMessage) || (err == nil && ev.Group != id) {
			return ErrNoMessage
		}
		if err != nil {
			return fmt.Errorf("load event %d: %w", mid, err)
		}
		if err := ch.tx.ReadUpTo(ctx, id, c.Login, mid, s.clock()); err != nil {
			return fmt.Errorf("read %d up to %d for %s: %w", id, mid, c.Login, err)
		}
		return nil
	})
}

// DeleteMessage removes a message's text from the log. Its sender or an admin
// may, both joined. Joined members are sent DM.
func (s *Service) DeleteMessage(ctx context.Context, c Caller, id GroupID, mid MID, dn string) error {
	if err := checkDisplayName(dn); err != nil {
		return err
	}
	return s.updateIn(ctx, id, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		msg, err := messageOf(ctx, ch.tx, id, mid)
		if err != nil {
			return err
		}
		if st.me.Status != StatusJoined || (msg.Sender != c.Login && !st.me.Admin) {
			return ErrNotAllowed
		}
		if err := ch.tx.DeleteMessage(ctx, mid); err != nil {
			return fmt.Errorf("delete message %d: %w", mid, err)
		}
		ev := Event{Group: id, Kind: KindDeleteMessage, Sender: c.Login, SenderDN: displayName(dn, c), Action: ActionDeleteMessage, Ref: mid, Time: s.clock()}
		_, err = ch.emit(ctx, ev, st.logins(isJoined))
		return err
	})
}

// MessageInfo lists a message's recipients with their receipts, for joined
// members.
func (s *Service) MessageInfo(ctx context.Context, c Caller, id GroupID, mid MID) ([]Receipt, error) {
	if err := s.requireJoinedReader(ctx, c, id); err != nil {
		return nil, err
	}
	if _, err := messageOf(ctx, s.store, id, mid); err != nil {
		return nil, err
	}
	return s.store.Receipts(ctx, mid)
}

// History limits.
const (
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 200
)

// historyLimit is the page size a history call asked for: 0 is the
// default.
func historyLimit(limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultHistoryLimit, nil
	case limit < 0 || limit > MaxHistoryLimit:
		return 0, invalid("limit %d is out of 1..%d", limit, MaxHistoryLimit)
	}
	return limit, nil
}

// Messages returns up to limit events of a group's log after the given MID,
// for joined members, and whether more follow.
func (s *Service) Messages(ctx context.Context, c Caller, id GroupID, after MID, limit int) ([]Event, bool, error) {
	limit, err := historyLimit(limit)
	if err != nil {
		return nil, false, err
	}
	if err := s.requireJoinedReader(ctx, c, id); err != nil {
		return nil, false, err
	}
	evs, err := s.store.Events(ctx, id, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("load events of %d: %w", id, err)
	}
	if len(evs) > limit {
		return evs[:limit], true, nil
	}
	return evs, false, nil
}

// MessagesBefore returns the newest limit events of a group's log below
// the given MID (before 0: the newest of all) in MID order, for joined
// members, and whether older ones exist.
func (s *Service) MessagesBefore(ctx context.Context, c Caller, id GroupID, before MID, limit int) ([]Event, bool, error) {
	limit, err := historyLimit(limit)
	if err != nil {
		return nil, false, err
	}
	if err := s.requireJoinedReader(ctx, c, id); err != nil {
		return nil, false, err
	}
	if before == 0 {
		before = math.MaxUint64
	}
	evs, err := s.store.EventsBefore(ctx, id, before, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("load events of %d before %d: %w", id, before, err)
	}
	if len(evs) > limit {
		return evs[1:], true, nil
	}
	return evs, false, nil
}

// requireJoinedReader checks without a transaction that the caller is a
// joined member: reads of the log are for joined members only.
func (s *Service) requireJoinedReader(ctx context.Context, c Caller, id GroupID) error {
	if _, err := s.store.Group(ctx, id); err != nil {
		return err
	}
	members, err := s.store.Members(ctx, id)
	if err != nil {
		return fmt.Errorf("load members of %d: %w", id, err)
	}
	for _, m := range members {
		if m.Login == c.Login {
			if m.Status != StatusJoined {
				return ErrNotAllowed
			}
			return nil
		}
	}
	return ErrNotMember
}

// messageOf loads a live message of the group.
func messageOf(ctx context.Context, r Reader, id GroupID, mid MID) (Event, error) {
	ev, err := r.Event(ctx, mid)
	if err != nil {
		return Event{}, err
	}
	if ev.Group != id || ev.Kind != KindMessage || ev.Deleted {
		return Event{}, ErrNoMessage
	}
	return ev, nil
}

// Direct is a one-to-one message for a user who has no reachable device.
type Direct struct {
	To          string
	DisplayName string // the sender's display name
	ContentType string // text/plain unless told
	Text        string
}

// StoreDirect keeps a one-to-one message until the recipient registers a
// device (store and forward, like Kamailio's msilo) and returns its MID.
func (s *Service) StoreDirect(ctx context.Context, c Caller, d Direct) (MID, error) {
	if !ValidLogin(d.To) {
		return 0, invalid("recipient %q is not a login", d.To)
	}
	if err := s.checkText(d.Text); err != nil {
		return 0, err
	}
	if d.ContentType == "" {
		d.ContentType = "text/plain"
	}
	var mid MID
	err := s.update(ctx, func(ch *change) error {
		if err := s.lockQuotas(ctx, ch.tx, c.Login); err != nil {
			return err
		}
		if err := s.checkPending(ctx, ch.tx, c.Login, []string{d.To}); err != nil {
			return err
		}
		ev := Event{Kind: KindDirect, Sender: c.Login, SenderDN: displayName(checkedName(d.DisplayName), c), Body: d.Text,
			ContentType: d.ContentType, Time: s.clock()}
		var err error
		mid, err = ch.emit(ctx, ev, []string{d.To})
		return err
	})
	return mid, s.observeQuota(err)
}

// checkedName keeps a display name only when it is acceptable.
func checkedName(dn string) string {
	if checkDisplayName(dn) != nil {
		return ""
	}
	return dn
}
