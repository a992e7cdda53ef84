package cluster_test

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gchd/internal/testkit"
)

// The fault tests post a burst to one group and do something to a node
// or the database in the middle of it. Every post answered 200 must reach
// every member (0 lost); what arrives twice at a member (the same
// X-GC-MID) is counted and printed: only deliveries in flight at the
// fault may come twice.

// post sends one text over node n's API; mid is 0 when it was not
// answered 200 (the node is dead, say).
func post(n *node, login string, id int, text string) uint64 {
	form := url.Values{"gm": {"sendMessage"}, "pm": {fmt.Sprintf(`{"id":%d,"mb":%q}`, id, text)}}
	req, err := http.NewRequest("POST", fmt.Sprintf("http://127.0.0.1:%d/gch.ashx", n.http), strings.NewReader(form.Encode()))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(login, testkit.Password(login))
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	defer res.Body.Close()
	mid, err := strconv.ParseUint(res.Header.Get("X-GC-MID"), 10, 64)
	if err != nil || res.StatusCode != 200 {
		return 0
	}
	return mid
}

// burst posts count texts from login over n's API, spaced by gap, and
// calls at once after the first after posts are answered.
type burst struct {
	mu       sync.Mutex
	answered []uint64
	failed   int
	done     chan struct{}
}

func startBurst(n *node, login string, id, count int, gap time.Duration, after int, at func()) *burst {
	b := &burst{done: make(chan struct{})}
	go func() {
		defer close(b.done)
		fired := false
		for i := range count {
			mid := post(n, login, id, fmt.Sprintf("burst %d", i))
			b.mu.Lock()
			if mid != 0 {
				b.answered = append(b.answered, mid)
			} else {
				b.failed++
			}
			ok := len(b.answered)
			b.mu.Unlock()
			// Once: the posts that fail after it leave the count where it was.
			if ok == after && at != nil && !fired {
				fired = true
				at()
			}
			time.Sleep(gap)
		}
	}()
	return b
}

func (b *burst) wait(t *testing.T) []uint64 {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the burst did not end")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	t.Logf("burst: %d posts answered 200, %d not", len(b.answered), b.failed)
	return slices.Clone(b.answered)
}

// mids counts the X-GC-MIDs a member's devices received.
func mids(devices ...*phone) map[uint64]int {
	got := map[uint64]int{}
	for _, p := range devices {
		for _, r := range p.received() {
			if h := r.GetHeader("X-GC-MID"); h != nil {
				if m, err := strconv.ParseUint(h.Value(), 10, 64); err == nil {
					got[m]++
				}
			}
		}
	}
	return got
}

// member is one login's devices, the old ones and those it moved to.
type member struct {
	login   string
	devices []*phone
}

// settle waits until every member has every answered MID and reports the
// losses and duplicates of each; it fails the test on a loss.
func settle(t *testing.T, answered []uint64, members ...*member) {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		missing := 0
		for _, m := range members {
			got := mids(m.devices...)
			for _, mid := range answered {
				if got[mid] == 0 {
					missing++
				}
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	lostTotal := 0
	for _, m := range members {
		got := mids(m.devices...)
		lost, dups := 0, 0
		for _, mid := range answered {
			if got[mid] == 0 {
				lost++
			}
		}
		for _, n := range got {
			dups += n - 1
		}
		lostTotal += lost
		t.Logf("%s: %d of %d answered posts received, %d lost, %d duplicates", m.login, len(answered)-lost, len(answered), lost, dups)
	}
	if lostTotal > 0 {
		t.Fatalf("%d deliveries of posts answered 200 were lost", lostTotal)
	}
}

// inOrder checks that a device received its burst texts in MID order,
// a duplicate of an earlier one aside.
func inOrder(t *testing.T, p *phone, answered []uint64) {
	t.Helper()
	want := map[uint64]bool{}
	for _, m := range answered {
		want[m] = true
	}
	var last uint64
	seen := map[uint64]bool{}
	for _, r := range p.received() {
		h := r.GetHeader("X-GC-MID")
		if h == nil {
			continue
		}
		m, _ := strconv.ParseUint(h.Value(), 10, 64)
		if !want[m] || seen[m] {
			continue
		}
		seen[m] = true
		if m < last {
			t.Errorf("%s received MID %d after %d", p.login, m, last)
		}
		last = m
	}
}

// groupWith makes a group owned by owner on n with members joined.
func groupWith(t *testing.T, n *node, owner string, logins ...string) int {
	t.Helper()
	var gm []string
	for _, l := range logins {
		gm = append(gm, fmt.Sprintf(`{"l":%q}`, l))
	}
	id := groupID(t, api(t, n, owner, "addGroup", `{"gs":"burst","gm":[`+strings.Join(gm, ",")+`]}`))
	for _, l := range logins {
		if got := api(t, n, l, "joinGroup", fmt.Sprintf(`{"id":%d}`, id)); got != "200" {
			t.Fatalf("joinGroup of %s: %s", l, got)
		}
	}
	return id
}

// annAndDan registers ann over TCP with n2 and dan over UDP with n3, and
// makes pat's group with them on n1.
func annAndDan(t *testing.T, n1, n2, n3 *node) (ann, dan *phone, group int) {
	t.Helper()
	ann, dan = newPhone(t, n2, "ann", "TCP"), newPhone(t, n3, "dan", "UDP")
	ann.register()
	dan.register()
	time.Sleep(time.Second) // every node knows them
	return ann, dan, groupWith(t, n1, "pat", "ann", "dan")
}

// kill9 kills a node's process without letting it stop.
func kill9(n *node) {
	n.cmd.Process.Kill()
	<-n.exited
}

// The node that holds members' flows dies in a burst: its TCP members
// register with another node and get everything, in MID order; its UDP
// member gets everything once it registers anywhere; a member on a third
// node misses nothing.
func TestKillMemberNode(t *testing.T) {
	c, n1, n2, n3 := threeNodes(t, "pat", "ann", "ben", "cat", "dan")
	ann, ben, cat := newPhone(t, n2, "ann", "TCP"), newPhone(t, n2, "ben", "TCP"), newPhone(t, n2, "cat", "UDP")
	dan := newPhone(t, n3, "dan", "UDP")
	for _, p := range []*phone{ann, ben, cat, dan} {
		p.register()
	}
	id := groupWith(t, n1, "pat", "ann", "ben", "cat", "dan")
	killed := make(chan struct{})
	b := startBurst(n1, "pat", id, 300, 5*time.Millisecond, 60, func() {
		kill9(n2)
		close(killed)
	})
	<-killed
	// The TCP phones find their connection gone and register elsewhere;
	// the UDP one knows nothing until it registers again.
	time.Sleep(300 * time.Millisecond)
	ann3, ben3 := newPhone(t, n3, "ann", "TCP"), newPhone(t, n3, "ben", "TCP")
	ann3.register()
	ben3.register()
	answered := b.wait(t)
	cat1 := newPhone(t, n1, "cat", "UDP")
	cat1.register()
	settle(t, answered, &member{"ann", []*phone{ann, ann3}}, &member{"ben", []*phone{ben, ben3}},
		&member{"cat", []*phone{cat, cat1}}, &member{"dan", []*phone{dan}})
	inOrder(t, ann3, answered)
	inOrder(t, ben3, answered)

	// n2 comes back under its name with a new epoch and takes part again.
	before := c.epoch("n2")
	c.run(n2)
	within(t, 30*time.Second, "n2 back", func() bool { return n2.ready() == 200 && c.sees(t, n1, 3)() })
	if after := c.epoch("n2"); after <= before {
		t.Fatalf("n2 restarted under epoch %d, was %d", after, before)
	}
	eve := newPhone(t, n2, "ann", "TCP")
	eve.register()
	time.Sleep(time.Second)
	if mid := post(n1, "pat", id, "after n2's return"); mid == 0 {
		t.Fatal("post after n2's return not answered")
	}
	within(t, 10*time.Second, "ann, back on n2, has the next post", eve.has("after n2's return"))
}

// The node that takes the posts dies in a burst: every post it answered
// reaches the members on the other nodes, found by their sweep when its
// wake-up was never sent.
func TestKillPostingNode(t *testing.T) {
	_, n1, n2, n3 := threeNodes(t, "pat", "ann", "dan")
	ann, dan, id := annAndDan(t, n1, n2, n3)
	b := startBurst(n1, "pat", id, 300, 2*time.Millisecond, 80, func() { kill9(n1) })
	answered := b.wait(t)
	if len(answered) < 80 {
		t.Fatalf("only %d posts answered before the kill", len(answered))
	}
	settle(t, answered, &member{"ann", []*phone{ann}}, &member{"dan", []*phone{dan}})
	inOrder(t, ann, answered)
	inOrder(t, dan, answered)
}

// Every node's listening session is cut in a burst: the nodes listen
// again, catch up from the tables, and every post arrives.
func TestListenersCut(t *testing.T) {
	c, n1, n2, n3 := threeNodes(t, "pat", "ann", "dan")
	ann, dan, id := annAndDan(t, n1, n2, n3)
	admin := testkit.PostgresAdmin(t)
	var name string
	if err := c.db.QueryRow("SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	cut := make(chan int, 1)
	b := startBurst(n1, "pat", id, 200, 2*time.Millisecond, 50, func() {
		var n int
		admin.QueryRow("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'gchd listener'",
			name).Scan(&n)
		cut <- n
	})
	answered := b.wait(t)
	if n := <-cut; n != 3 {
		t.Fatalf("%d listening sessions cut, want one per node", n)
	}
	settle(t, answered, &member{"ann", []*phone{ann}}, &member{"dan", []*phone{dan}})
}

// A node frozen (SIGSTOP) for longer than its lease in a burst: its
// member registers with another node and gets everything there; woken
// (SIGCONT), the node finds itself fenced, rejoins under a new epoch and
// sends nothing stale to the member's old connection.
func TestFrozenNode(t *testing.T) {
	c, n1, n2, n3 := threeNodes(t, "pat", "ann", "dan")
	ann, dan, id := annAndDan(t, n1, n2, n3)
	before := c.epoch("n2")
	var frozenAt uint64
	b := startBurst(n1, "pat", id, 400, 10*time.Millisecond, 40, func() {
		n2.cmd.Process.Signal(syscall.SIGSTOP)
	})
	within(t, 10*time.Second, "n1 sees n2 gone", c.sees(t, n1, 2))
	b.mu.Lock()
	frozenAt = b.answered[39]
	b.mu.Unlock()
	ann3 := newPhone(t, n3, "ann", "TCP")
	ann3.register()
	answered := b.wait(t)
	settle(t, answered, &member{"ann", []*phone{ann, ann3}}, &member{"dan", []*phone{dan}})

	n2.cmd.Process.Signal(syscall.SIGCONT)
	within(t, 15*time.Second, "n2 back", func() bool { return n2.ready() == 200 && c.sees(t, n1, 3)() })
	if after := c.epoch("n2"); after <= before {
		t.Fatalf("n2 rejoined under epoch %d, was %d", after, before)
	}
	if mid := post(n1, "pat", id, "after the thaw"); mid == 0 {
		t.Fatal("post after the thaw not answered")
	}
	within(t, 10*time.Second, "ann on n3 has the post after the thaw", ann3.has("after the thaw"))
	time.Sleep(2 * time.Second) // what n2 would send, it sends by now
	stale := 0
	for m := range mids(ann) {
		if m > frozenAt+1 { // the post at the freeze may have been in flight
			stale++
		}
	}
	if stale > 0 || ann.has("after the thaw")() {
		t.Fatalf("the thawed node sent %d deliveries committed during its freeze to the old connection", stale)
	}
	if log := n2.logText(); !strings.Contains(log, "node fenced") {
		t.Fatalf("n2 did not log its fence:\n%s", log)
	}
}
