package app

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"gchd/chat"
	"gchd/internal/testkit"
	"gchd/storage"
)

// One account cannot leave more than chat.max_pending_per_sender
// invitations and stored messages waiting for another: beyond it addGroup
// and addMember answer 429 and a MESSAGE to be stored 486, counted in the
// database (a restart changes nothing) and in the metrics. Other senders
// are not affected, and once the recipient's phone took what waited, the
// sender may again.
func TestSecurityQuotaPendingPerSender(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		cfg.Chat.MaxPendingPerSender = 3
		cfg.Chat.MaxGroupsPerHour = 0
		s := start(t, cfg)
		for _, l := range []string{"att", "vic", "oth"} {
			s.addAccount(l, "pw-"+l, l)
		}
		invite := func(s *server, by string) reply {
			return s.call(by, "pw-"+by, "addGroup", map[string]any{"gs": "spam", "gm": []map[string]string{{"l": "vic"}}})
		}
		var own struct{ ID uint32 }
		s.must("att", "addGroup", map[string]any{"gs": "mine", "gm": []map[string]string{{"l": "oth"}}}).json(t, &own)
		for i := 0; i < 3; i++ {
			if r := invite(s, "att"); r.status != 200 {
				t.Fatalf("invitation %d: %s", i+1, r)
			}
		}
		att := newPhone(t, s, "att", "UDP")
		att.register()
		counts := s.rowCounts()
		if r := invite(s, "att"); r.status != 429 || r.code() != 429 {
			t.Fatalf("4th invitation of an offline user: %s, want 429", r)
		}
		if r := s.call("att", "pw-att", "addMember", map[string]any{"id": own.ID, "gm": []map[string]string{{"l": "vic"}}}); r.code() != 429 {
			t.Fatalf("addMember over the quota: %s, want 429", r)
		}
		if res := att.message("vic", "let me in"); res.StatusCode != 486 {
			t.Fatalf("MESSAGE stored for vic over the quota: %s, want 486", res.StartLine())
		}
		if got := s.rowCounts(); !maps.Equal(got, counts) {
			t.Fatalf("refusals changed the database: %v, then %v", counts, got)
		}
		if !metricAtLeast(t, s, `gchd_chat_quota_refusals_total{quota="pending"}`, 3) {
			t.Errorf("refusals not counted in gchd_chat_quota_refusals_total")
		}
		// Per sender and recipient: oth may invite vic, att may invite oth.
		if r := invite(s, "oth"); r.status != 200 {
			t.Fatalf("another sender's invitation: %s", r)
		}
		if r := s.call("att", "pw-att", "addGroup", map[string]any{"gs": "x", "gm": []map[string]string{{"l": "oth"}}}); r.status != 200 {
			t.Fatalf("invitation of someone else: %s", r)
		}

		// In the database: a restart keeps the count.
		s.stop()
		s = start(t, cfg)
		if r := invite(s, "att"); r.code() != 429 {
			t.Fatalf("after a restart: %s, want 429", r)
		}

		// vic's phone takes what waited; then att may invite again.
		vic := newPhone(t, s, "vic", "UDP")
		vic.register()
		vic.waitFor(4)
		deadline := time.Now().Add(10 * time.Second)
		for {
			r := invite(s, "att")
			if r.status == 200 {
				break
			}
			if r.code() != 429 || time.Now().After(deadline) {
				t.Fatalf("invitation after vic took the backlog: %s", r)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// One account creates at most chat.max_groups_per_hour groups within an
// hour: deleting them does not give the quota back, a restart keeps it,
// other accounts are not affected.
func TestSecurityQuotaGroupsPerHour(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		cfg.Chat.MaxGroupsPerHour = 5
		s := start(t, cfg)
		s.addAccount("att", "pw-att", "")
		s.addAccount("oth", "pw-oth", "")
		var first struct{ ID uint32 }
		for i := 0; i < 5; i++ {
			r := s.must("att", "addGroup", map[string]any{"gs": fmt.Sprintf("g%d", i)})
			if i == 0 {
				r.json(t, &first)
			}
		}
		counts := s.rowCounts()
		if r := s.call("att", "pw-att", "addGroup", map[string]any{"gs": "one too many"}); r.status != 429 || r.code() != 429 {
			t.Fatalf("6th group within the hour: %s, want 429", r)
		}
		if got := s.rowCounts(); !maps.Equal(got, counts) {
			t.Fatalf("the refusal changed the database: %v, then %v", counts, got)
		}
		s.must("att", "delGroup", map[string]any{"id": first.ID})
		if r := s.call("att", "pw-att", "addGroup", map[string]any{"gs": "after delGroup"}); r.code() != 429 {
			t.Fatalf("after deleting one: %s, want 429", r)
		}
		if !metricAtLeast(t, s, `gchd_chat_quota_refusals_total{quota="groups"}`, 2) {
			t.Errorf("refusals not counted in gchd_chat_quota_refusals_total")
		}
		s.must("oth", "addGroup", map[string]any{"gs": "someone else"})
		s.stop()
		s = start(t, cfg)
		if r := s.call("att", "pw-att", "addGroup", map[string]any{"gs": "after a restart"}); r.code() != 429 {
			t.Fatalf("after a restart: %s, want 429", r)
		}
	})
}

// delGroup takes the group's history with it: its messages, deliveries,
// receipts, members and files go at once; only the DG notification stays
// until every member's phone took it, and then goes too (within
// chat.purge_interval). Members got DG, and a member who was offline gets
// only DG, not the invitation of a group that no longer exists.
func TestSecurityDeletedGroupHistoryGoes(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		cfg.Chat.PurgeInterval = 200 * time.Millisecond
		s := start(t, cfg)
		for _, l := range []string{"own", "mem", "off"} {
			s.addAccount(l, "pw-"+l, "")
		}
		mem := newPhone(t, s, "mem", "UDP")
		mem.register()
		id := groupOf(t, s, "own", "mem", "off")
		s.must("mem", "joinGroup", map[string]any{"id": id})
		var mids []uint64
		for i := 0; i < 3; i++ {
			mids = append(mids, sendMID(t, s, "own", map[string]any{"id": id, "mb": fmt.Sprintf("secret %d", i)}))
		}
		s.must("mem", "readMessage", map[string]any{"id": id, "mid": mids[0]})
		if r := s.upload("own", "pw-own", map[string]any{"id": id}, "file", "a.jpg", jpegOf(t, 8, 8)); r.status != 200 {
			t.Fatalf("avatar: %s", r)
		}
		if r := s.upload("own", "pw-own", map[string]any{"id": id, "t": "video"}, "file", "v.mp4", mp4Header); r.status != 200 {
			t.Fatalf("video: %s", r)
		}
		ctx := context.Background()
		fp, err := s.app.db.GroupFootprint(ctx, chat.GroupID(id))
		if err != nil {
			t.Fatal(err)
		}
		if fp["events"] < 5 || fp["receipts"] < 1 || fp["media"] != 2 || fp["members"] != 3 {
			t.Fatalf("before delGroup: %v", fp)
		}
		mem.waitFor(1 + 1 + 3 + 2) // NG, EG (join), 3 messages, EG (avatar, video)

		s.must("own", "delGroup", map[string]any{"id": id})
		fp, err = s.app.db.GroupFootprint(ctx, chat.GroupID(id))
		if err != nil {
			t.Fatal(err)
		}
		// The DG and its three deliveries (own, mem, off) are all that is left.
		if fp["chat_groups"] != 0 || fp["members"] != 0 || fp["media"] != 0 || fp["events"] != 1 || fp["deliveries"] != 3 {
			t.Fatalf("right after delGroup: %v, want only the DG event and its 3 deliveries", fp)
		}
		got := notificationsOf(mem.waitFor(8))
		if last := got[len(got)-1]; !strings.HasPrefix(last.body, "~[GC M:'DG' GID:"+fmt.Sprint(id)+" ") {
			t.Fatalf("mem's last delivery %q, want DG", last.body)
		}
		// own and off have not taken theirs: the DG stays.
		time.Sleep(4 * cfg.Chat.PurgeInterval)
		if fp, _ = s.app.db.GroupFootprint(ctx, chat.GroupID(id)); fp["events"] != 1 {
			t.Fatalf("DG gone before every member got it: %v", fp)
		}
		for _, l := range []string{"own", "off"} {
			p := newPhone(t, s, l, "UDP")
			p.register()
			got := notificationsOf(p.waitFor(1))
			time.Sleep(100 * time.Millisecond)
			if got = notificationsOf(p.received()); len(got) != 1 || !strings.HasPrefix(got[0].body, "~[GC M:'DG' ") {
				t.Fatalf("%s got %v after delGroup, want only DG", l, got)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			fp, err = s.app.db.GroupFootprint(ctx, chat.GroupID(id))
			if err != nil {
				t.Fatal(err)
			}
			zero := true
			for _, n := range fp {
				zero = zero && n == 0
			}
			if zero {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("10 s after every DG was delivered, the database holds %v of the deleted group", fp)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}
