package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"gchd/chat"
)

// phones is a Deliverer whose members' reachability the test decides.
type phones struct {
	mu       sync.Mutex
	online   map[string]bool
	failNext map[string]error // answered once, then forgotten
	got      map[string][]chat.MID
}

func newPhones() *phones {
	return &phones{online: map[string]bool{}, failNext: map[string]error{}, got: map[string][]chat.MID{}}
}

func (p *phones) Deliver(ctx context.Context, ev chat.Event, login string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err, ok := p.failNext[login]; ok {
		delete(p.failNext, login)
		return err
	}
	if !p.online[login] {
		return chat.ErrUnreachable
	}
	p.got[login] = append(p.got[login], ev.MID)
	return nil
}

func (p *phones) set(login string, online bool) {
	p.mu.Lock()
	p.online[login] = online
	p.mu.Unlock()
}

func (p *phones) fail(login string, err error) {
	p.mu.Lock()
	p.failNext[login] = err
	p.mu.Unlock()
}

func (p *phones) received(login string) []chat.MID {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.got[login])
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type outcomes struct {
	mu sync.Mutex
	n  map[string]int
}

func (o *outcomes) observe(outcome string, n int, _ time.Duration) {
	o.mu.Lock()
	o.n[outcome] += n
	o.mu.Unlock()
}

func (o *outcomes) get(outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[outcome]
}

func TestDispatcher(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		p := newPhones()
		obs := &outcomes{n: map[string]int{}}
		d := chat.NewDispatcher(e.db.DeliveryStore(), p, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 4, RetryMin: 30 * time.Millisecond, RetryMax: 100 * time.Millisecond,
			ScanInterval: 10 * time.Millisecond, Observe: obs.observe,
		})
		svc := chat.NewService(e.db.ChatStore(), chat.WithPublisher(d))
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			d.Run(ctx, context.Background())
		}()

		p.set("a", true)
		p.set("b", true)
		id, err := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b", "c"))
		if err != nil {
			t.Fatal(err)
		}
		mustJoin(t, env{db: e.db, svc: svc}, id, "b", "c")

		// Online members get it at once and cf is recorded.
		mid, err := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: "hello"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "b's delivery", func() bool { return slices.Contains(p.received("b"), mid) })
		eventually(t, "cf of b", func() bool {
			rs, _ := svc.MessageInfo(ctx, caller("a"), id, mid)
			return len(rs) == 2 && rs[0].Login == "b" && !rs[0].Confirmed.IsZero() && rs[1].Confirmed.IsZero()
		})

		// c is offline: more messages wait, and arrive in MID order on Flush.
		var want []chat.MID
		for i := 0; i < 5; i++ {
			m, err := svc.SendMessage(ctx, caller("b"), chat.Post{Group: id, Text: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, m)
		}
		eventually(t, "stored deliveries", func() bool { return obs.get(chat.OutcomeStored) >= 8 })
		if got := p.received("c"); len(got) != 0 {
			t.Fatalf("offline member received %v", got)
		}
		p.set("c", true)
		// Flushed together with members who have nothing waiting: one
		// read sorts them out.
		d.Flush("x")
		d.Flush("c")
		d.Flush("y")
		eventually(t, "c's backlog", func() bool { return len(p.received("c")) >= 8 })
		got := p.received("c")
		if !slices.IsSorted(got) || !slices.Contains(got, mid) || !slices.Contains(got, want[4]) {
			t.Fatalf("c received %v, want every pending MID in order", got)
		}

		// A temporary failure is retried; a rejection is final.
		p.fail("b", errors.New("408 request timeout"))
		m1, _ := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: "retry me"})
		eventually(t, "retried delivery", func() bool { return slices.Contains(p.received("b"), m1) })
		if obs.get(chat.OutcomeRetried) < 1 {
			t.Fatal("retry not observed")
		}
		p.fail("c", fmt.Errorf("415: %w", chat.ErrRejected))
		m2, _ := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: "unwanted"})
		eventually(t, "failed delivery", func() bool { return obs.get(chat.OutcomeFailed) == 1 })
		eventually(t, "settled rows", func() bool {
			ps, _ := e.db.DeliveryStore().PendingFor(ctx, "c", m2-1, 10)
			return len(ps) == 0
		})

		cancel()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	})
}

// A member's later deliveries do not overtake one that is being retried.
func TestDispatcherKeepsOrderAcrossRetries(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := newPhones()
		d := chat.NewDispatcher(e.db.DeliveryStore(), p, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 1, RetryMin: 20 * time.Millisecond, ScanInterval: 5 * time.Millisecond,
		})
		svc := chat.NewService(e.db.ChatStore(), chat.WithPublisher(d))
		go d.Run(ctx, context.Background())
		id, _ := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b"))
		mustJoin(t, env{db: e.db, svc: svc}, id, "b")
		p.set("b", true)
		p.fail("b", errors.New("503"))
		var want []chat.MID
		for i := 0; i < 5; i++ {
			m, _ := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: fmt.Sprint(i)})
			want = append(want, m)
		}
		eventually(t, "all five", func() bool {
			got := p.received("b")
			return len(got) >= 5 && slices.Contains(got, want[4])
		})
		var got []chat.MID
		for _, m := range p.received("b") {
			if slices.Contains(want, m) {
				got = append(got, m)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("b received %v, want %v in order", got, want)
		}
	})
}

// slowPhone takes a while to answer and records how many deliveries it
// had in flight at once.
type slowPhone struct {
	mu       sync.Mutex
	cur      int
	peak     int
	started  []chat.MID
	got      []chat.MID
	failOnce map[chat.MID]bool
}

func (p *slowPhone) Deliver(ctx context.Context, ev chat.Event, login string) error {
	p.mu.Lock()
	p.cur++
	p.peak = max(p.peak, p.cur)
	p.started = append(p.started, ev.MID)
	p.mu.Unlock()
	chat.Sent(ctx)
	time.Sleep(20 * time.Millisecond)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur--
	if p.failOnce[ev.MID] {
		delete(p.failOnce, ev.MID)
		return errors.New("503")
	}
	p.got = append(p.got, ev.MID)
	return nil
}

// With a window, a member has up to Window deliveries in flight, started
// in MID order; one that fails is retried and arrives once.
func TestDispatcherWindow(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &slowPhone{failOnce: map[chat.MID]bool{}}
		d := chat.NewDispatcher(e.db.DeliveryStore(), p, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 8, Window: 3, RetryMin: 20 * time.Millisecond, ScanInterval: 5 * time.Millisecond,
		})
		svc := chat.NewService(e.db.ChatStore())
		id, _ := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b"))
		mustJoin(t, env{db: e.db, svc: svc}, id, "b")
		var want []chat.MID
		for i := range 12 {
			m, err := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, m)
		}
		p.failOnce[want[4]] = true
		go d.Run(ctx, context.Background())
		d.Flush("b")
		eventually(t, "every delivery", func() bool {
			p.mu.Lock()
			defer p.mu.Unlock()
			return slices.Contains(p.got, want[4]) && len(p.got) >= len(want)
		})
		time.Sleep(50 * time.Millisecond) // nothing more arrives
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.peak != 3 {
			t.Errorf("at most %d deliveries in flight to one member, want 3", p.peak)
		}
		// The group's notifications (NG, EG) go to b as well.
		ours := func(m chat.MID) bool { return !slices.Contains(want, m) }
		got := slices.DeleteFunc(slices.Clone(p.got), ours)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("received %v, want each of %v once", p.got, want)
		}
		seen := map[chat.MID]bool{}
		var firsts []chat.MID
		for _, m := range slices.DeleteFunc(slices.Clone(p.started), ours) {
			if !seen[m] {
				seen[m] = true
				firsts = append(firsts, m)
			}
		}
		if !slices.IsSorted(firsts) {
			t.Errorf("first attempts started in order %v, want MID order", firsts)
		}
	})
}

// The sender of group text is no recipient: nothing waits for her, even
// with no device. A copy hook, when set, is handed each message once as it
// is published, and no notification.
func TestDispatcherCopiesToSender(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		p := newPhones()
		var mu sync.Mutex
		var copies []chat.Event
		d := chat.NewDispatcher(e.db.DeliveryStore(), p, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 2, ScanInterval: 10 * time.Millisecond,
			CopyToSender: func(ev chat.Event) {
				mu.Lock()
				copies = append(copies, ev)
				mu.Unlock()
			},
		})
		svc := chat.NewService(e.db.ChatStore(), chat.WithPublisher(d))
		stopped := make(chan struct{})
		go func() {
			defer close(stopped)
			d.Run(ctx, context.Background())
		}()
		defer func() { cancel(); <-stopped }()

		p.set("b", true) // a, the sender, has no device
		id, err := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b"))
		if err != nil {
			t.Fatal(err)
		}
		mustJoin(t, env{db: e.db, svc: svc}, id, "b")
		mid, err := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: "hello", Origin: "UDP|192.0.2.1:5060"})
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, "b's delivery", func() bool { return slices.Contains(p.received("b"), mid) })
		ps, err := e.db.DeliveryStore().PendingFor(ctx, "a", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, pd := range ps {
			if pd.Event.MID == mid {
				t.Fatalf("the sender's own message waits for her: %+v", pd)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(copies) != 1 || copies[0].MID != mid || copies[0].Sender != "a" || copies[0].Origin != "UDP|192.0.2.1:5060" {
			t.Fatalf("copies handed over: %+v", copies)
		}
	})
}

// sleeper is a member's phone that sleeps: while asleep every delivery is
// ErrAsleep (a push was sent), and wakeDuring makes the device register
// again in the middle of an attempt, as a woken phone may.
type sleeper struct {
	mu         sync.Mutex
	asleep     bool
	attempts   int
	got        []chat.MID
	wakeDuring func() // called once, inside an attempt that finds it asleep
}

func (p *sleeper) Deliver(ctx context.Context, ev chat.Event, login string) error {
	p.mu.Lock()
	p.attempts++
	if !p.asleep {
		p.got = append(p.got, ev.MID)
		p.mu.Unlock()
		return nil
	}
	wake := p.wakeDuring
	p.wakeDuring = nil
	p.mu.Unlock()
	if wake != nil {
		wake()
	}
	return chat.ErrAsleep
}

func (p *sleeper) state() (attempts int, got []chat.MID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attempts, slices.Clone(p.got)
}

// A delivery to a sleeping device waits for its registration without a
// retry time, even one that was being retried: a retry would only wake it
// again. When the device registers, everything goes out once, in order,
// also when it registered while an attempt was finding it asleep.
func TestDispatcherWaitsForSleepingDevice(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		p := &sleeper{}
		obs := &outcomes{n: map[string]int{}}
		var d *chat.Dispatcher
		d = chat.NewDispatcher(e.db.DeliveryStore(), p, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 2, RetryMin: 10 * time.Millisecond, RetryMax: 10 * time.Millisecond, ScanInterval: 5 * time.Millisecond,
			Observe: obs.observe,
		})
		svc := chat.NewService(e.db.ChatStore(), chat.WithPublisher(d))
		id, _ := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b"))
		mustJoin(t, env{db: e.db, svc: svc}, id, "b")
		go d.Run(ctx, context.Background())
		d.Flush("b")
		eventually(t, "the group's notifications", func() bool {
			ps, err := e.db.DeliveryStore().PendingFor(ctx, "b", 0, 10)
			return err == nil && len(ps) == 0
		})
		_, notices := p.state()

		p.mu.Lock()
		p.asleep = true
		p.mu.Unlock()
		var want []chat.MID
		for i := range 5 {
			m, err := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, m)
		}
		eventually(t, "five deliveries left waiting", func() bool { return obs.get(chat.OutcomeStored) >= 5 })
		before, _ := p.state()
		time.Sleep(100 * time.Millisecond) // ten retry scans
		if after, _ := p.state(); after != before {
			t.Fatalf("%d attempts to a sleeping device after it was woken, want none until it registers", after-before)
		}

		// It registers again while an attempt finds it asleep: the flush
		// then reads the rows while that job is still in flight.
		p.mu.Lock()
		p.wakeDuring = func() {
			d.Flush("b")
			time.Sleep(50 * time.Millisecond) // the flush's read happens now
			p.mu.Lock()
			p.asleep = false
			p.mu.Unlock()
		}
		p.mu.Unlock()
		d.Flush("b")
		eventually(t, "every waiting delivery", func() bool {
			_, got := p.state()
			return len(got) >= len(notices)+len(want)
		})
		time.Sleep(100 * time.Millisecond) // nothing more arrives
		_, got := p.state()
		if got = got[len(notices):]; !slices.Equal(got, want) {
			t.Fatalf("received %v, want %v once each, in order", got, want)
		}
	})
}

// handing is a Deliverer for a node that sends none of member's
// deliveries: another node holds the member's newest flow.
type handing struct {
	mu     sync.Mutex
	member string
	handed []chat.MID
	next   chat.Deliverer
}

func (h *handing) Deliver(ctx context.Context, ev chat.Event, login string) error {
	if login == h.member {
		h.mu.Lock()
		h.handed = append(h.handed, ev.MID)
		h.mu.Unlock()
		return chat.ErrElsewhere
	}
	return h.next.Deliver(ctx, ev, login)
}

// Two nodes' dispatchers on one database: the committing node hands a
// member's deliveries over and leaves the rows pending; the node that
// sends them takes the events in MID order whatever order the wake-ups
// came in, and settles the rows.
func TestDispatcherHandsOver(t *testing.T) {
	eachEngine(t, func(t *testing.T, e env) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		obs := &outcomes{n: map[string]int{}}
		here := &handing{member: "b", next: newPhones()}
		d1 := chat.NewDispatcher(e.db.DeliveryStore(), here, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 2, ScanInterval: 10 * time.Millisecond, Observe: obs.observe,
		})
		svc := chat.NewService(e.db.ChatStore(), chat.WithPublisher(d1))
		var runs sync.WaitGroup
		runs.Add(1)
		go func() { defer runs.Done(); d1.Run(ctx, context.Background()) }()
		defer runs.Wait()
		defer cancel()

		id, err := svc.AddGroup(ctx, caller("a"), "s", "", invitees("b"))
		if err != nil {
			t.Fatal(err)
		}
		mustJoin(t, env{db: e.db, svc: svc}, id, "b")
		var mids []chat.MID
		for i := range 2 {
			m, err := svc.SendMessage(ctx, caller("a"), chat.Post{Group: id, Text: fmt.Sprint(i)})
			if err != nil {
				t.Fatal(err)
			}
			mids = append(mids, m)
		}
		// The NG, the EG of her joining and both texts.
		eventually(t, "b's deliveries handed over", func() bool { return obs.get(chat.OutcomeHandedOver) >= 4 })
		ps, err := e.db.DeliveryStore().PendingFor(ctx, "b", 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) < 2 {
			t.Fatalf("b's rows after the hand-over: %d pending, want them all kept", len(ps))
		}

		there := newPhones()
		there.set("b", true)
		d2 := chat.NewDispatcher(e.db.DeliveryStore(), there, slog.New(slog.DiscardHandler), chat.DispatchOptions{
			Workers: 2, ScanInterval: 10 * time.Millisecond,
		})
		// The wake-ups arrive newest first, before the node delivers.
		for _, m := range []chat.MID{mids[1], mids[0]} {
			if err := d2.Wake(ctx, m, []string{"b", "a"}); err != nil { // a has no row: a sender's own text
				t.Fatal(err)
			}
		}
		if !d2.Holds("b") || d2.Holds("a") {
			t.Fatal("Holds does not tell the member with queued deliveries")
		}
		runs.Add(1)
		go func() { defer runs.Done(); d2.Run(ctx, context.Background()) }()
		eventually(t, "b's texts from the other node", func() bool { return len(there.received("b")) == 2 })
		if got := there.received("b"); !slices.Equal(got, mids) {
			t.Fatalf("b received %v, want %v in MID order", got, mids)
		}
		eventually(t, "rows settled by the other node", func() bool {
			ps, _ := e.db.DeliveryStore().PendingFor(ctx, "b", mids[0]-1, 10)
			return len(ps) == 0
		})
	})
}
