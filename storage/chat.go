package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"gchd/chat"
)

// ChatStore returns the chat engine's view of the database. Its reads go to
// the reader pool; Update runs on the writer.
func (db *DB) ChatStore() chat.Store { return chatStore{db.reader()} }

type chatStore struct{ queries }

func (s chatStore) Update(ctx context.Context, fn func(chat.Tx) error) error {
	return s.db.update(ctx, "chat_update", func(q queries) error { return fn(&chatTx{queries: q}) })
}

func (s chatStore) UpdateIn(ctx context.Context, id chat.GroupID, fn func(chat.Tx) error) error {
	return s.db.updateGroup(ctx, "chat_update", id, func(q queries) error { return fn(&chatTx{queries: q, only: id}) })
}

type groupRow struct {
	ID       int64  `db:"id"`
	Subject  string `db:"subject"`
	Owner    string `db:"owner"`
	Created  int64  `db:"created_at"`
	AvatarAt int64  `db:"avatar_at"`
	VideoAt  int64  `db:"video_at"`
}

func (r groupRow) group() chat.Group {
	return chat.Group{
		ID: chat.GroupID(r.ID), Subject: r.Subject, Owner: r.Owner, Created: fromMicros(r.Created),
		AvatarAt: fromMicros(r.AvatarAt), VideoAt: fromMicros(r.VideoAt),
	}
}

const groupColumns = "id, subject, owner, created_at, avatar_at, video_at"

func (q queries) Group(ctx context.Context, id chat.GroupID) (chat.Group, error) {
	return q.group(ctx, id, "")
}

func (q queries) group(ctx context.Context, id chat.GroupID, suffix string) (chat.Group, error) {
	var r groupRow
	err := q.get(ctx, &r, "SELECT "+groupColumns+" FROM chat_groups WHERE id = ?"+suffix, int64(id))
	if errors.Is(err, sql.ErrNoRows) {
		return chat.Group{}, chat.ErrNoGroup
	}
	if err != nil {
		return chat.Group{}, fmt.Errorf("select group %d: %w", id, err)
	}
	return r.group(), nil
}

type memberRow struct {
	GroupID     int64  `db:"group_id"`
	Login       string `db:"login"`
	DisplayName string `db:"display_name"`
	Status      string `db:"status"`
	Admin       bool   `db:"admin"`
	Since       int64  `db:"since"`
	HasAccount  bool   `db:"has_account"`
}

func (q queries) Members(ctx context.Context, id chat.GroupID) ([]chat.Member, error) {
	var rows []memberRow
	err := q.selectAll(ctx, &rows, `SELECT m.group_id, m.login, m.display_name, m.status, m.admin, m.since,
		       (a.login IS NOT NULL) AS has_account
		FROM members m LEFT JOIN accounts a ON a.login = m.login
		WHERE m.group_id = ? ORDER BY m.since, m.login`, int64(id))
	if err != nil {
		return nil, fmt.Errorf("select members of %d: %w", id, err)
	}
	out := make([]chat.Member, len(rows))
	for i, r := range rows {
		out[i] = r.member()
	}
	return out, nil
}

func (r memberRow) member() chat.Member {
	return chat.Member{
		Group: chat.GroupID(r.GroupID), Login: r.Login, DisplayName: r.DisplayName,
		Status: chat.Status(r.Status), Admin: r.Admin, Since: fromMicros(r.Since), HasAccount: r.HasAccount,
	}
}

type eventRow struct {
	MID      int64  `db:"mid"`
	GroupID  int64  `db:"group_id"`
	Kind     string `db:"kind"`
	Sender   string `db:"sender"`
	SenderDN string `db:"sender_dn"`
	Body     string `db:"body"`
	Ref      int64  `db:"ref"`
	Created  int64  `db:"created_at"`
	Deleted  bool   `db:"deleted"`
	Origin   string `db:"origin"`
	CType    string `db:"content_type"`
}

func (r eventRow) event() chat.Event {
	e := chat.Event{
		MID: chat.MID(r.MID), Group: chat.GroupID(r.GroupID), Kind: chat.Kind(r.Kind), Sender: r.Sender,
		SenderDN: r.SenderDN, Body: r.Body, Ref: chat.MID(r.Ref), Time: fromMicros(r.Created), Deleted: r.Deleted,
		Origin: r.Origin, ContentType: r.CType,
	}
	if e.Kind.IsNotification() {
		e.Action, e.Body = actionOfCode(r.Body), ""
	}
	return e
}

// actionCodes are what events.body holds for the action of a notification:
// the names rows have held since the first schema (the API's method names
// then), so that every row reads back alike.
var actionCodes = [...]string{
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

// eventBody is what events.body holds for e: a message's text, or the code
// of a notification's action.
func eventBody(e chat.Event) string {
	if e.Action != chat.ActionNone && int(e.Action) < len(actionCodes) {
		return actionCodes[e.Action]
	}
	return e.Body
}

func actionOfCode(code string) chat.Action {
	for a, c := range actionCodes {
		if c == code && c != "" {
			return chat.Action(a)
		}
	}
	return chat.ActionNone
}

const eventColumns = "mid, group_id, kind, sender, sender_dn, body, ref, created_at, deleted, origin, content_type"

func (q queries) Event(ctx context.Context, mid chat.MID) (chat.Event, error) {
	var r eventRow
	err := q.get(ctx, &r, "SELECT "+eventColumns+" FROM events WHERE mid = ?", int64(mid))
	if errors.Is(err, sql.ErrNoRows) {
		return chat.Event{}, chat.ErrNoMessage
	}
	if err != nil {
		return chat.Event{}, fmt.Errorf("select event %d: %w", mid, err)
	}
	return r.event(), nil
}

func (q queries) Events(ctx context.Context, id chat.GroupID, after chat.MID, limit int) ([]chat.Event, error) {
	var rows []eventRow
	err := q.selectAll(ctx, &rows, "SELECT "+eventColumns+" FROM events WHERE group_id = ? AND mid > ? ORDER BY mid LIMIT ?",
		int64(id), int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("select events of %d: %w", id, err)
	}
	out := make([]chat.Event, len(rows))
	for i, r := range rows {
		out[i] = r.event()
	}
	return out, nil
}

// maxMID bounds a MID from a request to what the engines store (BIGINT).
func maxMID(mid chat.MID) int64 {
	if mid > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(mid)
}

func (q queries) EventsBefore(ctx context.Context, id chat.GroupID, before chat.MID, limit int) ([]chat.Event, error) {
	var rows []eventRow
	err := q.selectAll(ctx, &rows, "SELECT "+eventColumns+" FROM events WHERE group_id = ? AND mid < ? ORDER BY mid DESC LIMIT ?",
		int64(id), maxMID(before), limit)
	if err != nil {
		return nil, fmt.Errorf("select events of %d before %d: %w", id, before, err)
	}
	out := make([]chat.Event, len(rows))
	for i, r := range rows {
		out[len(rows)-1-i] = r.event()
	}
	return out, nil
}

// EventsFor reads a login's stream from the log. Its groups are those it
// has a member row in (left ones too: what was due before leaving stays
// due); a deleted group has none left, so its DG, all that remains of it,
// is looked up apart. Both parts walk indexes (members_by_login with
// events_by_group, events_deleted_group) within (after, upTo], and the
// delivery rows are probed by their primary key: no index is added to
// deliveries, which every fan-out writes.
func (q queries) EventsFor(ctx context.Context, login string, after, upTo chat.MID, limit int) ([]chat.Event, error) {
	var rows []eventRow
	err := q.selectAll(ctx, &rows, `SELECT `+eventColumns+` FROM events e
		WHERE e.group_id IN (SELECT m.group_id FROM members m WHERE m.login = ?)
		  AND e.mid > ? AND e.mid <= ? AND e.kind <> 'DG'
		  AND ((e.kind = 'MSG' AND e.sender = ?)
		       OR EXISTS (SELECT 1 FROM deliveries d WHERE d.mid = e.mid AND d.login = ?))
		UNION ALL
		SELECT `+eventColumns+` FROM events e
		WHERE e.kind = 'DG' AND e.mid > ? AND e.mid <= ?
		  AND EXISTS (SELECT 1 FROM deliveries d WHERE d.mid = e.mid AND d.login = ?)
		ORDER BY mid LIMIT ?`,
		login, maxMID(after), maxMID(upTo), login, login, maxMID(after), maxMID(upTo), login, limit)
	if err != nil {
		return nil, fmt.Errorf("select events of %s after %d: %w", login, after, err)
	}
	out := make([]chat.Event, len(rows))
	for i, r := range rows {
		out[i] = r.event()
	}
	return out, nil
}

func (q queries) LastMID(ctx context.Context) (chat.MID, error) {
	var mid int64
	if err := q.get(ctx, &mid, "SELECT COALESCE(MAX(mid), 0) FROM events"); err != nil {
		return 0, fmt.Errorf("select the last MID: %w", err)
	}
	return chat.MID(mid), nil
}

func (q queries) Receipts(ctx context.Context, mid chat.MID) ([]chat.Receipt, error) {
	var rows []struct {
		Login string `db:"login"`
		CF    int64  `db:"cf_at"`
		RD    int64  `db:"rd_at"`
	}
	err := q.selectAll(ctx, &rows, `SELECT d.login, d.cf_at, d.rd_at FROM deliveries d JOIN events e ON e.mid = d.mid
		WHERE d.mid = ? AND d.login <> e.sender ORDER BY d.login`, int64(mid))
	if err != nil {
		return nil, fmt.Errorf("select receipts of %d: %w", mid, err)
	}
	out := make([]chat.Receipt, len(rows))
	for i, r := range rows {
		out[i] = chat.Receipt{Login: r.Login, Confirmed: fromMicros(r.CF), Read: fromMicros(r.RD)}
	}
	return out, nil
}

func (q queries) GroupsWith(ctx context.Context, logins ...string) ([]chat.Group, error) {
	if len(logins) == 0 {
		return nil, nil
	}
	query, args, err := sqlx.In(`SELECT `+groupColumns+` FROM chat_groups WHERE id IN (
		SELECT group_id FROM members WHERE login IN (?) AND status IN ('w', 'j')
		GROUP BY group_id HAVING COUNT(*) = ?) ORDER BY id`, logins, len(logins))
	if err != nil {
		return nil, err
	}
	var rows []groupRow
	if err := q.selectOnce(ctx, &rows, query, args...); err != nil {
		return nil, fmt.Errorf("select groups of %s: %w", strings.Join(logins, ","), err)
	}
	out := make([]chat.Group, len(rows))
	for i, r := range rows {
		out[i] = r.group()
	}
	return out, nil
}

func (q queries) GroupsOf(ctx context.Context, login string) ([]chat.MemberGroup, error) {
	var rows []struct {
		groupRow
		ReadMID int64 `db:"read_mid"`
		LastMID int64 `db:"last_mid"`
		LastAt  int64 `db:"last_at"`
		Unread  int   `db:"unread"`
	}
	// One statement for every group. The end of a log is the first entry
	// of events_by_group walked back from the group: asked as MAX(mid) or
	// ORDER BY mid DESC, PostgreSQL may walk the primary key back instead
	// and pass every later event of the server for a group that has been
	// quiet. The unread count walks only the log above the marker, probing
	// the member's delivery of each message by its key.
	err := q.selectAll(ctx, &rows, `SELECT q.*, COALESCE((SELECT x.created_at FROM events x WHERE x.mid = q.last_mid), 0) AS last_at
		FROM (SELECT g.id, g.subject, g.owner, g.created_at, g.avatar_at, g.video_at, m.read_mid,
			COALESCE((SELECT CASE WHEN e.group_id = g.id THEN e.mid ELSE 0 END FROM events e
				WHERE e.group_id <= g.id ORDER BY e.group_id DESC, e.mid DESC LIMIT 1), 0) AS last_mid,
			(SELECT COUNT(*) FROM events e JOIN deliveries d ON d.mid = e.mid AND d.login = m.login
				WHERE e.group_id = g.id AND e.mid > m.read_mid AND e.kind = 'MSG' AND NOT e.deleted
				AND e.sender <> m.login AND d.rd_at = 0) AS unread
			FROM members m JOIN chat_groups g ON g.id = m.group_id
			WHERE m.login = ? AND m.status IN ('w', 'j')) AS q
		ORDER BY q.id`, login)
	if err != nil {
		return nil, fmt.Errorf("select groups of %s: %w", login, err)
	}
	out := make([]chat.MemberGroup, len(rows))
	for i, r := range rows {
		out[i] = chat.MemberGroup{Group: r.group(), ReadMID: chat.MID(r.ReadMID), LastMID: chat.MID(r.LastMID),
			LastAt: fromMicros(r.LastAt), Unread: r.Unread}
	}
	return out, nil
}

func (q queries) Media(ctx context.Context, id chat.GroupID, kind chat.MediaKind) (chat.Media, error) {
	var r struct {
		ContentType string `db:"content_type"`
		Data        []byte `db:"data"`
		Updated     int64  `db:"updated_at"`
	}
	err := q.get(ctx, &r, "SELECT content_type, data, updated_at FROM media WHERE group_id = ? AND kind = ?", int64(id), string(kind))
	if errors.Is(err, sql.ErrNoRows) {
		return chat.Media{}, chat.ErrNoMedia
	}
	if err != nil {
		return chat.Media{}, fmt.Errorf("select %s of %d: %w", kind, id, err)
	}
	return chat.Media{Group: id, Kind: kind, ContentType: r.ContentType, Data: r.Data, Updated: fromMicros(r.Updated)}, nil
}

// chatTx is chat.Tx over one SQL transaction.
type chatTx struct {
	queries
	// only is the group an update of UpdateIn may lock: on PostgreSQL it
	// shares its transaction with other updates of that group, and a lock
	// of anything else could deadlock with another node's batch.
	only chat.GroupID
}

// errOtherLock refuses a lock outside the one group of an UpdateIn.
var errOtherLock = errors.New("an update of one group takes a lock outside it")

func (t *chatTx) LockGroup(ctx context.Context, id chat.GroupID) (chat.Group, error) {
	if t.only != 0 && id != t.only {
		return chat.Group{}, fmt.Errorf("lock group %d in an update of group %d: %w", id, t.only, errOtherLock)
	}
	if h := t.held; h != nil && h.id == id {
		if h.group != nil {
			return *h.group, nil
		}
		// Locked already; read again after a write.
		g, err := t.group(ctx, id, "")
		if err == nil {
			h.group = &g
		}
		return g, err
	}
	// SQLite transactions are already exclusive (BEGIN IMMEDIATE).
	if t.db.engine == Postgres {
		return t.group(ctx, id, " FOR UPDATE")
	}
	return t.group(ctx, id, "")
}

// Members reads the members of the batch's group once for the batch
// (heldGroup); each caller gets a copy of its own.
func (t *chatTx) Members(ctx context.Context, id chat.GroupID) ([]chat.Member, error) {
	h := t.held
	if h == nil || h.id != id {
		return t.queries.Members(ctx, id)
	}
	if h.members == nil {
		m, err := t.queries.Members(ctx, id)
		if err != nil {
			return nil, err
		}
		h.members = m
	}
	return append([]chat.Member(nil), h.members...), nil
}

func (t *chatTx) CreateGroup(ctx context.Context, g chat.Group) (chat.GroupID, error) {
	var id int64
	err := t.get(ctx, &id, `INSERT INTO chat_groups (subject, owner, created_at, avatar_at, video_at)
		VALUES (?, ?, ?, ?, ?) RETURNING id`, g.Subject, g.Owner, micros(g.Created), micros(g.AvatarAt), micros(g.VideoAt))
	if err != nil {
		return 0, fmt.Errorf("insert group: %w", err)
	}
	return chat.GroupID(id), nil
}

func (t *chatTx) UpdateGroup(ctx context.Context, g chat.Group) error {
	t.held.forget()
	_, err := t.exec(ctx, `UPDATE chat_groups SET subject = ?, owner = ?, avatar_at = ?, video_at = ? WHERE id = ?`,
		g.Subject, g.Owner, micros(g.AvatarAt), micros(g.VideoAt), int64(g.ID))
	return err
}

func (t *chatTx) DeleteGroup(ctx context.Context, id chat.GroupID) error {
	t.held.forget()
	// Deliveries and receipts go with their events, members and media with
	// the group (ON DELETE CASCADE). A group has one DG, the one just
	// appended: it stays to be delivered.
	if _, err := t.exec(ctx, "DELETE FROM events WHERE group_id = ? AND kind <> 'DG'", int64(id)); err != nil {
		return fmt.Errorf("delete history: %w", err)
	}
	_, err := t.exec(ctx, "DELETE FROM chat_groups WHERE id = ?", int64(id))
	return err
}

func (t *chatTx) PutMember(ctx context.Context, m chat.Member) error {
	t.held.forget()
	_, err := t.exec(ctx, `INSERT INTO members (group_id, login, display_name, status, admin, since, read_mid)
		VALUES (?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(mid), 0) FROM events WHERE group_id = ?))
		ON CONFLICT (group_id, login) DO UPDATE SET display_name = excluded.display_name,
			status = excluded.status, admin = excluded.admin, since = excluded.since`,
		int64(m.Group), m.Login, m.DisplayName, string(m.Status), m.Admin, micros(m.Since), int64(m.Group))
	return err
}

func (t *chatTx) AppendEvent(ctx context.Context, e chat.Event, recipients []string) (chat.MID, error) {
	var mid int64
	ct := e.ContentType
	if ct == "" {
		ct = "text/plain"
	}
	args := []any{int64(e.Group), string(e.Kind), e.Sender, e.SenderDN, eventBody(e), int64(e.Ref), micros(e.Time), e.Origin, ct}
	// Deliveries of unsolicited events name their sender, for the quota
	// of what one account leaves waiting for another (PendingFrom).
	quotaSender := ""
	if e.Kind.Unsolicited() {
		quotaSender = e.Sender
	}
	if b := t.appends; b != nil {
		mid, ok, err := b.take(ctx, t.queries)
		if err != nil {
			return 0, err
		}
		if ok {
			b.add(mid, e, ct, recipients, quotaSender)
			if t.effects != nil {
				t.effects.wrote = true // undone, should it fail, by a rerun without it
			}
			return chat.MID(mid), nil
		}
	}
	if t.db.engine == Postgres {
		// One round trip for the event and its fan-out: the group is locked
		// meanwhile, so every round trip here is time other senders wait.
		err := t.get(ctx, &mid, `WITH e AS (
				INSERT INTO events (group_id, kind, sender, sender_dn, body, ref, created_at, origin, content_type)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING mid),
			d AS (INSERT INTO deliveries (mid, login, sender)
				SELECT e.mid, l, CASE WHEN l = CAST(? AS text) THEN '' ELSE CAST(? AS text) END
				FROM e, unnest(CAST(? AS text[])) AS l)
			SELECT mid FROM e`, append(args, e.Sender, quotaSender, pq.Array(recipients))...)
		return chat.MID(mid), err
	}
	err := t.get(ctx, &mid, `INSERT INTO events (group_id, kind, sender, sender_dn, body, ref, created_at, origin, content_type)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING mid`, args...)
	if err != nil {
		return 0, err
	}
	// Rows go in chunks of fixed sizes, so that three prepared statements
	// serve every group size.
	for len(recipients) > 0 {
		n := 1
		for _, size := range []int{32, 8} {
			if len(recipients) >= size {
				n = size
				break
			}
		}
		args := make([]any, 0, 3*n)
		for _, l := range recipients[:n] {
			sender := quotaSender
			if l == e.Sender {
				sender = ""
			}
			args = append(args, mid, l, sender)
		}
		recipients = recipients[n:]
		query := "INSERT INTO deliveries (mid, login, sender) VALUES (?, ?, ?)" + strings.Repeat(", (?, ?, ?)", n-1)
		if _, err := t.exec(ctx, query, args...); err != nil {
			return 0, err
		}
	}
	return chat.MID(mid), nil
}

func (t *chatTx) DeleteMessage(ctx context.Context, mid chat.MID) error {
	if _, err := t.exec(ctx, "UPDATE events SET deleted = ?, body = '' WHERE mid = ?", true, int64(mid)); err != nil {
		return err
	}
	_, err := t.exec(ctx, "UPDATE deliveries SET state = 'x', next_at = 0 WHERE mid = ? AND state = 'p'", int64(mid))
	return err
}

func (t *chatTx) SetReceipt(ctx context.Context, mid chat.MID, login string, cf, rd time.Time) error {
	_, err := t.exec(ctx, `UPDATE deliveries SET state = CASE WHEN state = 'p' THEN 'd' ELSE state END, next_at = 0,
			cf_at = CASE WHEN cf_at = 0 THEN ? ELSE cf_at END,
			rd_at = CASE WHEN rd_at = 0 THEN ? ELSE rd_at END
		WHERE mid = ? AND login = ?`, micros(cf), micros(rd), int64(mid), login)
	return err
}

// settleSet is what a receipt writes to a delivery, as SetReceipt: it is
// done (a pending one is not sent any more), and cf and rd keep their first
// values.
const settleSet = `state = CASE WHEN state = 'p' THEN 'd' ELSE state END, next_at = 0,
			cf_at = CASE WHEN cf_at = 0 THEN ? ELSE cf_at END,
			rd_at = CASE WHEN rd_at = 0 THEN ? ELSE rd_at END`

func (t *chatTx) SettleNotice(ctx context.Context, id chat.GroupID, mid chat.MID, login string, cf, rd time.Time) (bool, error) {
	res, err := t.exec(ctx, `UPDATE deliveries SET `+settleSet+`
		WHERE login = ? AND mid IN (
			SELECT mid FROM events WHERE mid = ? AND group_id = ? AND kind IN ('NG', 'EG', 'DG', 'DM')
			UNION ALL
			SELECT mid FROM events WHERE ref = ? AND kind = 'DM' AND group_id = ?)`,
		micros(cf), micros(rd), login, maxMID(mid), int64(id), maxMID(mid), int64(id))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *chatTx) ReadUpTo(ctx context.Context, id chat.GroupID, login string, mid chat.MID, at time.Time) error {
	// One statement per table however many messages: the log of the group
	// above the marker (events_by_group), each delivery found by its key.
	// Rows read already were settled by that read. The upper bound is
	// written so that no index serves it: with the marker unknown when
	// the statement is planned, PostgreSQL would otherwise walk the
	// primary key between the two MIDs, through every group's events.
	_, err := t.exec(ctx, `UPDATE deliveries SET `+settleSet+`
		WHERE login = ? AND rd_at = 0 AND mid IN (
			SELECT e.mid FROM events e WHERE e.group_id = ? AND e.kind = 'MSG' AND NOT e.deleted AND e.mid + 0 <= ?
				AND e.mid > (SELECT m.read_mid FROM members m WHERE m.group_id = ? AND m.login = ?))`,
		micros(at), micros(at), login, int64(id), maxMID(mid), int64(id), login)
	if err != nil {
		return fmt.Errorf("mark read up to %d: %w", mid, err)
	}
	if _, err := t.exec(ctx, "UPDATE members SET read_mid = ? WHERE group_id = ? AND login = ? AND read_mid < ?",
		maxMID(mid), int64(id), login, maxMID(mid)); err != nil {
		return fmt.Errorf("move read marker to %d: %w", mid, err)
	}
	return nil
}

func (t *chatTx) ReadNewest(ctx context.Context, id chat.GroupID, login string, mid chat.MID) error {
	_, err := t.exec(ctx, `UPDATE members SET read_mid = ? WHERE group_id = ? AND login = ? AND read_mid < ?
		AND NOT EXISTS (SELECT 1 FROM events e WHERE e.group_id = ? AND e.mid > ? AND e.kind = 'MSG'
			AND NOT e.deleted AND e.sender <> ?)`,
		maxMID(mid), int64(id), login, maxMID(mid), int64(id), maxMID(mid), login)
	return err
}

func (t *chatTx) PutMedia(ctx context.Context, m chat.Media) error {
	_, err := t.exec(ctx, `INSERT INTO media (group_id, kind, content_type, data, updated_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (group_id, kind) DO UPDATE SET content_type = excluded.content_type,
			data = excluded.data, updated_at = excluded.updated_at`,
		int64(m.Group), string(m.Kind), m.ContentType, m.Data, micros(m.Updated))
	return err
}

// quotaLockSpace is the first key of the advisory locks of LockSender, so
// that they meet no other lock of gchd's ("gchd" in ASCII).
const quotaLockSpace = 0x67636864

func (t *chatTx) LockSender(ctx context.Context, login string) error {
	if t.only != 0 {
		return fmt.Errorf("lock the quotas of %s in an update of group %d: %w", login, t.only, errOtherLock)
	}
	// SQLite transactions are exclusive already (BEGIN IMMEDIATE).
	if t.db.engine != Postgres {
		return nil
	}
	_, err := t.exec(ctx, "SELECT pg_advisory_xact_lock(?, hashtext(?))", quotaLockSpace, login)
	return err
}

func (t *chatTx) PendingFrom(ctx context.Context, sender string, recipients []string) (map[string]int, error) {
	var rows []struct {
		Login string `db:"login"`
		N     int    `db:"n"`
	}
	// sender <> '' spelled out lets both engines use the partial index.
	err := t.selectAmongLogins(ctx, &rows, "SELECT login, COUNT(*) AS n FROM deliveries WHERE sender = ? AND sender <> '' AND state = 'p' AND login",
		" GROUP BY login", recipients, sender)
	if err != nil {
		return nil, err
	}
	out := make(map[string]int, len(rows))
	for _, r := range rows {
		out[r.Login] = r.N
	}
	return out, nil
}

func (t *chatTx) CountCreation(ctx context.Context, login string, at, since time.Time) (int, error) {
	if _, err := t.exec(ctx, "DELETE FROM group_creations WHERE login = ? AND created_at < ?", login, micros(since)); err != nil {
		return 0, fmt.Errorf("forget old creations: %w", err)
	}
	if _, err := t.exec(ctx, "INSERT INTO group_creations (login, created_at) VALUES (?, ?)", login, micros(at)); err != nil {
		return 0, fmt.Errorf("record creation: %w", err)
	}
	var n int
	if err := t.get(ctx, &n, "SELECT COUNT(*) FROM group_creations WHERE login = ?", login); err != nil {
		return 0, fmt.Errorf("count creations: %w", err)
	}
	return n, nil
}

func (t *chatTx) DeleteMedia(ctx context.Context, id chat.GroupID, kind chat.MediaKind) (bool, error) {
	res, err := t.exec(ctx, "DELETE FROM media WHERE group_id = ? AND kind = ?", int64(id), string(kind))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// GroupFootprint counts what the database holds of a group: its row, member
// rows, files, events, their deliveries and the receipts among those (cf or
// rd set). It is for operators' checks and tests that a deleted group's
// data is gone.
func (db *DB) GroupFootprint(ctx context.Context, id chat.GroupID) (map[string]int, error) {
	out := map[string]int{}
	for name, query := range map[string]string{
		"chat_groups": "SELECT COUNT(*) FROM chat_groups WHERE id = ?",
		"members":     "SELECT COUNT(*) FROM members WHERE group_id = ?",
		"media":       "SELECT COUNT(*) FROM media WHERE group_id = ?",
		"events":      "SELECT COUNT(*) FROM events WHERE group_id = ?",
		"deliveries":  "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.mid = d.mid WHERE e.group_id = ?",
		"receipts":    "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.mid = d.mid WHERE e.group_id = ? AND (d.cf_at > 0 OR d.rd_at > 0)",
	} {
		var n int
		if err := db.r.GetContext(ctx, &n, db.sql(query), int64(id)); err != nil {
			return nil, fmt.Errorf("count %s of group %d: %w", name, id, err)
		}
		out[name] = n
	}
	return out, nil
}
