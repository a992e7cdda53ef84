package app

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/storage"
)

// page is a getMessages answer.
type page struct {
	M []struct {
		MID uint64 `json:"mid"`
		K   string `json:"k"`
		L   string `json:"l"`
		MB  string `json:"mb"`
		Ref uint64 `json:"ref"`
		Del bool   `json:"del"`
	} `json:"m"`
	More bool `json:"more"`
}

func (p page) mids() []uint64 {
	out := make([]uint64, len(p.M))
	for i, e := range p.M {
		out[i] = e.MID
	}
	return out
}

func history(t *testing.T, s *server, login string, pm map[string]any) page {
	t.Helper()
	var p page
	s.must(login, "getMessages", pm).json(t, &p)
	return p
}

// myGroup is a group of getMyGroups with its log's end and unread count.
type myGroup struct {
	ID uint32 `json:"id"`
	GS string `json:"gs"`
	LM uint64 `json:"lm"`
	LT string `json:"lt"`
	UN int    `json:"un"`
	RM uint64 `json:"rm"`
}

func myGroupOf(t *testing.T, s *server, login string, id uint32) myGroup {
	t.Helper()
	var gs []myGroup
	s.must(login, "getMyGroups", nil).json(t, &gs)
	for _, g := range gs {
		if g.ID == id {
			return g
		}
	}
	t.Fatalf("%s does not list group %d: %+v", login, id, gs)
	return myGroup{}
}

var specTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$`)

// An app opens a chat at its newest page and pages backward with before:
// over 500 messages every MID comes exactly once, in order, and more turns
// false at the group's first event.
func TestHistoryBackward(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		for _, l := range []string{"own", "mem", "wai"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "mem", "wai")
		s.must("mem", "joinGroup", map[string]any{"id": id})
		other := groupOf(t, s, "own", "mem")
		s.must("mem", "joinGroup", map[string]any{"id": other})
		for i := 0; i < 500; i++ {
			login := "own"
			if i%3 == 0 {
				login = "mem"
			}
			sendMID(t, s, login, map[string]any{"id": id, "mb": fmt.Sprintf("m%d", i)})
			if i%100 == 0 {
				sendMID(t, s, "own", map[string]any{"id": other, "mb": "elsewhere"})
			}
		}
		// The whole log forward, as after has always given it.
		var forward []uint64
		for after, more := uint64(0), true; more; {
			p := history(t, s, "mem", map[string]any{"id": id, "after": after, "limit": 200})
			forward = append(forward, p.mids()...)
			more = p.More
			after = p.M[len(p.M)-1].MID
		}
		if len(forward) != 502 { // NG, EG (mem joined), 500 messages
			t.Fatalf("forward: %d events, want 502", len(forward))
		}

		latest := history(t, s, "mem", map[string]any{"id": id, "latest": true, "limit": 37})
		if !latest.More || fmt.Sprint(latest.mids()) != fmt.Sprint(forward[len(forward)-37:]) {
			t.Fatalf("latest = %v (more %v), want %v", latest.mids(), latest.More, forward[len(forward)-37:])
		}
		if latest.M[36].MB != "m499" {
			t.Fatalf("newest = %+v, want m499", latest.M[36])
		}
		if def := history(t, s, "mem", map[string]any{"id": id, "latest": true}); len(def.M) != 50 || !def.More {
			t.Fatalf("latest with the default limit: %d events, more %v", len(def.M), def.More)
		}

		// Backward to the start, 37 at a time.
		var backward []uint64
		p := latest
		pages := 1
		for {
			for i := 1; i < len(p.M); i++ {
				if p.M[i].MID <= p.M[i-1].MID {
					t.Fatalf("page not in ascending order: %v", p.mids())
				}
			}
			backward = append(p.mids(), backward...)
			if !p.More {
				break
			}
			p = history(t, s, "mem", map[string]any{"id": id, "before": p.M[0].MID, "limit": 37})
			pages++
			if pages > 20 {
				t.Fatal("more never turned false")
			}
		}
		if fmt.Sprint(backward) != fmt.Sprint(forward) {
			t.Fatalf("backward gave %d MIDs, forward %d; they differ", len(backward), len(forward))
		}
		if p.M[0].K != "NG" || len(p.M) != 502%37 {
			t.Fatalf("first page = %+v, want it to start at NG with %d events", p.M, 502%37)
		}
		// Before the first event there is nothing; beyond the end is latest.
		if first := history(t, s, "mem", map[string]any{"id": id, "before": forward[0]}); len(first.M) != 0 || first.More {
			t.Fatalf("before the first MID: %+v", first)
		}
		huge := history(t, s, "mem", map[string]any{"id": id, "before": uint64(1) << 63, "limit": 37})
		if fmt.Sprint(huge.mids()) != fmt.Sprint(latest.mids()) {
			t.Fatalf("before 2^63 = %v, want the latest page", huge.mids())
		}
		// A MID inside the page: the events just below it.
		mid := forward[300]
		if got := history(t, s, "mem", map[string]any{"id": id, "before": mid, "limit": 5}); fmt.Sprint(got.mids()) != fmt.Sprint(forward[295:300]) || !got.More {
			t.Fatalf("before %d = %v, want %v", mid, got.mids(), forward[295:300])
		}

		// Conflicting or empty positions are refused.
		for _, pm := range []string{
			fmt.Sprintf(`{"id":%d,"latest":true,"before":%d}`, id, mid),
			fmt.Sprintf(`{"id":%d,"latest":true,"after":%d}`, id, mid),
			fmt.Sprintf(`{"id":%d,"latest":true,"after":0}`, id),
			fmt.Sprintf(`{"id":%d,"before":%d,"after":1}`, id, mid),
			fmt.Sprintf(`{"id":%d,"before":0}`, id),
			fmt.Sprintf(`{"id":%d,"latest":true,"limit":201}`, id),
			fmt.Sprintf(`{"id":%d,"before":%d,"limit":-1}`, id, mid),
			fmt.Sprintf(`{"id":%d,"latest":"yes"}`, id),
			fmt.Sprintf(`{"id":%d,"before":-5}`, id),
		} {
			if r := s.call("mem", "pw-mem", "getMessages", pm); r.code() != 400 {
				t.Errorf("getMessages %s: %s, want 400", pm, r)
			}
		}
		// latest false is no position: after keeps its meaning.
		if got := history(t, s, "mem", map[string]any{"id": id, "latest": false, "after": forward[499]}); fmt.Sprint(got.mids()) != fmt.Sprint(forward[500:]) {
			t.Fatalf("latest false, after: %v", got.mids())
		}
		// Only joined members read the log, whichever way.
		for _, pm := range []map[string]any{{"id": id, "latest": true}, {"id": id, "before": mid}} {
			if r := s.call("wai", "pw-wai", "getMessages", pmJSON(t, pm)); r.code() != 444 {
				t.Errorf("waiting member, getMessages %v: %s", pm, r)
			}
		}

		// The 500 messages, of which mem sent 167, are read in one call.
		if g := myGroupOf(t, s, "mem", id); g.UN != 333 || g.LM != forward[501] || !specTime.MatchString(g.LT) {
			t.Fatalf("before readUpTo: %+v, want un 333, lm %d", g, forward[501])
		}
		began := time.Now()
		s.must("mem", "readUpTo", map[string]any{"id": id, "mid": forward[501]})
		t.Logf("readUpTo over 500 messages: %v", time.Since(began))
		if g := myGroupOf(t, s, "mem", id); g.UN != 0 || g.RM != forward[501] {
			t.Fatalf("after readUpTo: %+v", g)
		}
		for _, i := range []int{3, 250, 501} { // messages of own
			if rd := receiptOf(t, s, "own", id, forward[i], "mem"); rd.RD == "" || rd.CF == "" {
				t.Fatalf("message %d after readUpTo: %v", forward[i], rd)
			}
		}
		// The other group is not touched.
		if g := myGroupOf(t, s, "mem", other); g.UN != 5 {
			t.Fatalf("other group: %+v, want un 5", g)
		}
	})
}

// getMyGroups tells each member where a group's log ends and how many
// messages of others she has not read; readUpTo, readMessage of the newest
// message and delMessage change the count as a user expects.
func TestUnreadCounts(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		for _, l := range []string{"own", "ann", "bob", "carl", "wai", "lef", "non"} {
			s.addAccount(l, "pw-"+l, "")
		}
		id := groupOf(t, s, "own", "ann", "bob", "wai", "lef", "carl")
		for _, l := range []string{"ann", "bob", "lef"} {
			s.must(l, "joinGroup", map[string]any{"id": id})
		}
		s.must("lef", "leaveGroup", map[string]any{"id": id})
		un := func(login string) int { t.Helper(); return myGroupOf(t, s, login, id).UN }
		expect := func(what string, want map[string]int) {
			t.Helper()
			for l, n := range want {
				if got := un(l); got != n {
					t.Errorf("%s: %s has un %d, want %d", what, l, got, n)
				}
			}
		}
		expect("no messages yet", map[string]int{"own": 0, "ann": 0, "bob": 0, "wai": 0})

		o1 := sendMID(t, s, "own", map[string]any{"id": id, "mb": "o1"})
		o2 := sendMID(t, s, "own", map[string]any{"id": id, "mb": "o2"})
		o3 := sendMID(t, s, "own", map[string]any{"id": id, "mb": "o3"})
		b1 := sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b1"})
		b2 := sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b2"})
		// Own posts do not count; the waiting member receives no text.
		expect("after posts", map[string]int{"own": 2, "ann": 5, "bob": 3, "wai": 0})
		g := myGroupOf(t, s, "ann", id)
		if g.LM != b2 || !specTime.MatchString(g.LT) {
			t.Fatalf("ann's view: %+v, want lm %d and a spec time", g, b2)
		}

		s.must("ann", "readUpTo", map[string]any{"id": id, "mid": o2})
		expect("ann read up to o2", map[string]int{"ann": 3, "own": 2})
		for mid, read := range map[uint64]bool{o1: true, o2: true, o3: false} {
			if r := receiptOf(t, s, "own", id, mid, "ann"); (r.RD != "") != read || (r.CF != "") != read {
				t.Errorf("ann's receipt of %d: %v, read %v", mid, r, read)
			}
		}

		// A deleted message no longer counts, for anybody.
		s.must("own", "delMessage", map[string]any{"id": id, "mid": o3})
		expect("o3 deleted", map[string]int{"ann": 2, "bob": 2, "own": 2})
		s.must("bob", "delMessage", map[string]any{"id": id, "mid": b1})
		expect("b1 deleted", map[string]int{"ann": 1, "own": 1, "bob": 2})
		g = myGroupOf(t, s, "ann", id)
		if g.LM <= b2 {
			t.Fatalf("the DM events end the log: lm %d, want above %d", g.LM, b2)
		}

		// readUpTo the end of the log (a DM notification), and back: the
		// marker never moves back.
		s.must("ann", "readUpTo", map[string]any{"id": id, "mid": g.LM})
		if g2 := myGroupOf(t, s, "ann", id); g2.UN != 0 || g2.RM != g.LM {
			t.Fatalf("after readUpTo lm: %+v", g2)
		}
		s.must("ann", "readUpTo", map[string]any{"id": id, "mid": o1})
		if g2 := myGroupOf(t, s, "ann", id); g2.UN != 0 || g2.RM != g.LM {
			t.Fatalf("readUpTo backwards moved the marker: %+v", g2)
		}

		// readMessage of the newest message moves the marker; of an older
		// one it marks just that one.
		b3 := sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b3"})
		b4 := sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b4"})
		b5 := sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b5"})
		expect("b3..b5", map[string]int{"ann": 3, "own": 4})
		s.must("ann", "readMessage", map[string]any{"id": id, "mid": b3})
		expect("ann read b3", map[string]int{"ann": 2})
		if rm := myGroupOf(t, s, "ann", id).RM; rm != g.LM {
			t.Fatalf("readMessage of an older message moved the marker to %d", rm)
		}
		s.must("ann", "readMessage", map[string]any{"id": id, "mid": b5})
		if g2 := myGroupOf(t, s, "ann", id); g2.UN != 0 || g2.RM != b5 {
			t.Fatalf("after readMessage of the newest: %+v", g2)
		}
		if r := receiptOf(t, s, "bob", id, b4, "ann"); r.RD != "" {
			t.Fatalf("b4 was not read one by one, yet: %v", r)
		}
		// confMessage is no read.
		s.must("own", "confMessage", map[string]any{"id": id, "mid": b5})
		expect("own confirmed b5", map[string]int{"own": 4})

		// A member who joins later counts only what reached her.
		s.must("carl", "joinGroup", map[string]any{"id": id})
		expect("carl joined", map[string]int{"carl": 0})
		sendMID(t, s, "bob", map[string]any{"id": id, "mb": "b6"})
		expect("b6", map[string]int{"carl": 1, "ann": 1})

		// Who may call readUpTo, and with what.
		for _, c := range []struct {
			login string
			pm    string
			want  int
		}{
			{"wai", fmt.Sprintf(`{"id":%d,"mid":%d}`, id, b5), 457},
			{"lef", fmt.Sprintf(`{"id":%d,"mid":%d}`, id, b5), 457},
			{"non", fmt.Sprintf(`{"id":%d,"mid":%d}`, id, b5), 444},
			{"ann", fmt.Sprintf(`{"id":%d,"mid":%d}`, id+1000, b5), 444},
			{"ann", fmt.Sprintf(`{"id":%d,"mid":%d}`, id, b5+1000), 444},
			{"ann", fmt.Sprintf(`{"id":%d}`, id), 400},
			{"ann", fmt.Sprintf(`{"mid":%d}`, b5), 400},
			{"ann", fmt.Sprintf(`{"id":%d,"mid":"x"}`, id), 400},
		} {
			if r := s.call(c.login, "pw-"+c.login, "readUpTo", c.pm); r.code() != c.want {
				t.Errorf("readUpTo by %s %s: %s, want %d", c.login, c.pm, r, c.want)
			}
		}
		// A refused readUpTo changed nothing.
		if rm := myGroupOf(t, s, "ann", id).RM; rm != b5 {
			t.Fatalf("ann's marker moved to %d on a refused call", rm)
		}
		// A MID of another group is refused even when it is lower.
		other := groupOf(t, s, "own", "ann")
		s.must("ann", "joinGroup", map[string]any{"id": other})
		x := sendMID(t, s, "own", map[string]any{"id": other, "mb": "x"})
		if r := s.call("ann", "pw-ann", "readUpTo", map[string]any{"id": id, "mid": x}); r.code() != 444 {
			t.Errorf("readUpTo with another group's MID: %s", r)
		}
		if g := myGroupOf(t, s, "ann", other); g.UN != 1 || g.LM != x {
			t.Errorf("other group: %+v", g)
		}
	})
}

var gcNotice = regexp.MustCompile(`^~\[GC M:'(NG|EG|DG|DM)' GID:(\d+) MID:(\d+)\]$`)

// A client that confirms and reads every notification it receives gets 200
// for each, and the confirmation settles the delivery; a notification that
// was never the caller's is still 444.
func TestConfirmNotifications(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		for _, l := range []string{"own", "ann", "wai", "non", "late"} {
			s.addAccount(l, "pw-"+l, "")
		}
		pending := func() float64 {
			return value(t, s, "gchd_delivery_pending", map[string]string{"state": "waiting"})
		}
		// Nobody has a device: every delivery waits.
		id := groupOf(t, s, "own", "ann", "wai", "late")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		s.must("own", "setGroupSubject", map[string]any{"id": id, "gs": "Renamed"}) // EG before late joined
		log := history(t, s, "own", map[string]any{"id": id, "latest": true})
		ng, joinEG, subjectEG := log.M[0].MID, log.M[1].MID, log.M[2].MID
		if log.M[0].K != "NG" || log.M[1].K != "EG" || log.M[2].K != "EG" {
			t.Fatalf("log = %+v", log.M)
		}
		s.must("late", "joinGroup", map[string]any{"id": id})

		// NG reached the invited wai, who has not joined: confMessage of it
		// answers 200 and settles it.
		before := pending()
		s.must("wai", "confMessage", map[string]any{"id": id, "mid": ng})
		if got := pending(); got != before-1 {
			t.Fatalf("pending after wai confirmed NG: %v, want %v", got, before-1)
		}
		if ps := pendingMIDs(t, s, "wai"); len(ps) != 0 {
			t.Fatalf("wai still has %v pending", ps)
		}
		// Again: 200, nothing more to settle.
		s.must("wai", "confMessage", map[string]any{"id": id, "mid": ng})
		if got := pending(); got != before-1 {
			t.Fatalf("pending after a second confirmation: %v", got)
		}
		// readMessage settles too.
		s.must("ann", "readMessage", map[string]any{"id": id, "mid": joinEG})
		s.must("ann", "conf Message", map[string]any{"id": id, "mid": ng})
		if got := pending(); got != before-3 {
			t.Fatalf("pending after ann settled two: %v, want %v", got, before-3)
		}

		// Never the caller's: late joined after the subject EG, non is no
		// member, wai gets no EG; the old answers stand.
		for _, c := range []struct {
			login, gm string
			mid       uint64
			want      int
		}{
			{"late", "confMessage", subjectEG, 444},
			{"late", "readMessage", subjectEG, 444},
			{"non", "confMessage", ng, 444},
			{"wai", "readMessage", subjectEG, 457},
			{"ann", "confMessage", ng + 100000, 444},
		} {
			if r := s.call(c.login, "pw-"+c.login, c.gm, map[string]any{"id": id, "mid": c.mid}); r.code() != c.want {
				t.Errorf("%s by %s of %d: %s, want %d", c.gm, c.login, c.mid, r, c.want)
			}
		}
		// The MID of a notification under another group's id is not found.
		other := groupOf(t, s, "ann")
		if r := s.call("ann", "pw-ann", "confMessage", map[string]any{"id": other, "mid": ng}); r.code() != 444 {
			t.Errorf("NG of group %d confirmed under group %d: %s", id, other, r)
		}

		// DM carries the deleted message's MID; confirming either MID
		// settles the DM.
		m := sendMID(t, s, "own", map[string]any{"id": id, "mb": "oops"})
		s.must("own", "delMessage", map[string]any{"id": id, "mid": m})
		before = pending()
		s.must("ann", "confMessage", map[string]any{"id": id, "mid": m})
		log = history(t, s, "own", map[string]any{"id": id, "latest": true, "limit": 1})
		dm := log.M[0].MID
		if log.M[0].K != "DM" || log.M[0].Ref != m {
			t.Fatalf("last event %+v, want the DM of %d", log.M[0], m)
		}
		s.must("late", "readMessage", map[string]any{"id": id, "mid": dm})
		if got := pending(); got != before-2 {
			t.Fatalf("pending after two DM confirmations: %v, want %v", got, before-2)
		}
		// wai was not joined: the DM was not hers, nor the message.
		if r := s.call("wai", "pw-wai", "confMessage", map[string]any{"id": id, "mid": m}); r.code() != 457 {
			t.Errorf("wai confirmed a DM she never got: %s", r)
		}

		// DG outlives the group; those it was due to confirm it.
		s.must("own", "delGroup", map[string]any{"id": id})
		dgs := pendingMIDs(t, s, "wai")
		if len(dgs) != 1 {
			t.Fatalf("wai has %v pending, want the DG", dgs)
		}
		before = pending()
		s.must("wai", "readMessage", map[string]any{"id": id, "mid": dgs[0]})
		if got := pending(); got != before-1 {
			t.Fatalf("pending after wai confirmed DG: %v, want %v", got, before-1)
		}
		if r := s.call("non", "pw-non", "confMessage", map[string]any{"id": id, "mid": dgs[0]}); r.code() != 444 {
			t.Errorf("non confirmed a DG he never got: %s", r)
		}
	})
}

// pendingMIDs lists the MIDs of login's pending deliveries.
func pendingMIDs(t *testing.T, s *server, login string) []uint64 {
	t.Helper()
	ps, err := s.app.db.DeliveryStore().PendingFor(context.Background(), login, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, len(ps))
	for i, p := range ps {
		out[i] = uint64(p.Event.MID)
	}
	return out
}

// A phone's owner whose app confirms every ~[GC ...] and every message her
// phone shows gets 200 for each.
func TestConfirmWhatThePhoneShows(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startSIPOn(t, engine)
		for _, l := range []string{"own", "ann"} {
			s.addAccount(l, "pw-"+l, "")
		}
		ann := newPhone(t, s, "ann", "UDP")
		ann.register()
		id := groupOf(t, s, "own", "ann")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		s.must("own", "setGroupSubject", map[string]any{"id": id, "gs": "New"})
		m := sendMID(t, s, "own", map[string]any{"id": id, "mb": "hello"})
		s.must("own", "delMessage", map[string]any{"id": id, "mid": m})
		got := notificationsOf(ann.waitFor(5)) // NG, EG, EG, the message, DM
		for _, n := range got {
			mid := n.mid
			if sm := gcNotice.FindStringSubmatch(n.body); sm != nil {
				mid, _ = strconv.ParseUint(sm[3], 10, 64)
			}
			for _, gm := range []string{"confMessage", "readMessage"} {
				r := s.call("ann", "pw-ann", gm, map[string]any{"id": id, "mid": mid})
				// The message was deleted before the app confirmed it: its MID
				// now stands for the DM, which ann received.
				if r.code() != 200 {
					t.Errorf("%s of %q (MID %d): %s", gm, n.body, mid, r)
				}
			}
		}
	})
}
