package ingress

import (
	"bytes"
	"hash/maphash"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// answered keeps, for sip.transaction_linger, the final answer to each
// request that came over UDP, encoded, so that a retransmission of the
// request gets the same answer again and is not acted on twice (RFC 3261
// 17.2.2, Timer J). The transaction itself ends as soon as it has
// answered: sipgo would keep the whole transaction (parsed request and
// response, state machine, timers: kilobytes of pointers for the garbage
// collector to trace) for those 32 s. INVITE transactions are left to
// sipgo (their ACK and retransmitted 2xx need it).
//
// Nothing kept here holds a pointer the collector must follow: keys are
// 128-bit hashes, answers are records in large byte chunks, and the map
// and the expiry queue hold only numbers. Under load the linger's worth
// of answers runs to hundreds of thousands of entries; kept as strings
// and slices they made every collection trace them all, and the
// collector's marking became a large part of the server's CPU.
type answered struct {
	ttl   time.Duration
	seeds [2]maphash.Seed

	mu    sync.Mutex
	byKey map[answerID]answerRef
	order []answeredEntry // oldest first, from head
	head  int
	seq   uint64 // of the last entry
	store answerChunks
}

// answer is a final response as sent: its bytes and where they went.
type answer struct {
	data []byte
	to   netip.AddrPort
}

// answerID stands for an answer key: two independently seeded 64-bit
// hashes. With seeds drawn per process a collision is neither likely
// (2^-128 per pair) nor something a client can aim for.
type answerID [2]uint64

// answerRef is what byKey holds for a key: the entry that expires it and
// its answer's record in store, n == 0 while the request is in progress.
type answerRef struct {
	seq   uint64
	chunk uint64
	off   uint32
	n     uint32
}

type answeredEntry struct {
	id  answerID
	at  int64 // Unix nanoseconds
	seq uint64
}

func newAnswered(ttl time.Duration) *answered {
	return &answered{ttl: ttl, seeds: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}, byKey: map[answerID]answerRef{}}
}

func (a *answered) id(key string) answerID {
	return answerID{maphash.String(a.seeds[0], key), maphash.String(a.seeds[1], key)}
}

// answerKey identifies a non-INVITE server transaction over UDP as RFC 3261
// 17.2.3 matches them (branch, sent-by, method), plus the source address.
// ok is false for requests whose transaction sipgo keeps: INVITE, ACK,
// CANCEL, other transports, and RFC 2543 branches.
func answerKey(req *sip.Request) (key string, ok bool) {
	if req.Transport() != "UDP" || req.IsInvite() || req.IsAck() || req.IsCancel() {
		return "", false
	}
	via := req.Via()
	if via == nil {
		return "", false
	}
	branch, _ := via.Params.Get("branch")
	if !strings.HasPrefix(branch, sip.RFC3261BranchMagicCookie) {
		return "", false
	}
	return branch + " " + string(req.Method) + " " + via.Host + ":" + strconv.Itoa(via.Port) + " " + req.Source(), true
}

// get returns the answer kept for key.
func (a *answered) get(key string, now time.Time) (answer, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	ref, ok := a.byKey[a.id(key)]
	if !ok || ref.n == 0 {
		return answer{}, false
	}
	return a.store.read(ref)
}

// What begin found for a request.
const (
	answerNone    = iota // nothing: the request is now marked in progress
	answerPending        // the request is in progress: drop the retransmission
	answerKept           // the request was answered: send the answer again
)

// begin marks the request of key in progress unless it already is, or was
// answered. It stands for the server transaction of a request that has
// none (the UDP ingress): a retransmission that arrives while the first
// copy is still being processed must not be processed a second time.
// put ends the mark with the answer, forget without one.
func (a *answered) begin(key string, now time.Time) (answer, int) {
	id := a.id(key)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	if ref, ok := a.byKey[id]; ok {
		if ref.n == 0 {
			return answer{}, answerPending
		}
		if ans, ok := a.store.read(ref); ok {
			return ans, answerKept
		}
		return answer{}, answerPending // unreadable: never sent twice
	}
	a.byKey[id] = answerRef{seq: a.enter(id, now)}
	return answer{}, answerNone
}

// forget removes the in-progress mark of a request left unanswered, so
// that its retransmission is processed.
func (a *answered) forget(key string) {
	id := a.id(key)
	a.mu.Lock()
	defer a.mu.Unlock()
	if ref, ok := a.byKey[id]; ok && ref.n == 0 {
		delete(a.byKey, id)
	}
}

// put keeps a copy of an answer for ttl. An answer that ends a mark of
// begin is kept for ttl from the mark, that is from the request's
// arrival: shorter by the time the request took, milliseconds against
// Timer J's 32 s.
func (a *answered) put(key string, ans answer, now time.Time) {
	id := a.id(key)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
	ref, ok := a.byKey[id]
	if !ok {
		ref.seq = a.enter(id, now)
	}
	ref.chunk, ref.off, ref.n = a.store.write(ans, now.UnixNano())
	a.byKey[id] = ref
}

// enter queues id for expiry and returns the entry's number. An entry
// expires its key only while the key holds that number: a key forgotten
// and entered again is not dropped early by its first entry.
func (a *answered) enter(id answerID, now time.Time) uint64 {
	a.seq++
	a.order = append(a.order, answeredEntry{id: id, at: now.UnixNano(), seq: a.seq})
	return a.seq
}

func (a *answered) expireLocked(now time.Time) {
	limit := now.UnixNano() - int64(a.ttl)
	for a.head < len(a.order) && a.order[a.head].at <= limit {
		e := a.order[a.head]
		if ref, ok := a.byKey[e.id]; ok && ref.seq == e.seq {
			delete(a.byKey, e.id)
		}
		a.head++
	}
	a.store.expire(limit)
	if a.head == len(a.order) && a.head > 1024 {
		// All expired after a burst: give its memory back (a map does not
		// shrink) rather than hold it while idle.
		a.order, a.head = nil, 0
		if len(a.byKey) == 0 {
			a.byKey = map[answerID]answerRef{}
		}
		return
	}
	// Reuse the array once the expired front is its larger part.
	if a.head > 1024 && a.head > len(a.order)/2 {
		n := copy(a.order, a.order[a.head:])
		a.order = a.order[:n]
		a.head = 0
	}
}

// expire drops the answers older than ttl. Every access expires too; this
// is for when none comes: without it the answers of a burst's last 32 s
// stayed in memory until the next request.
func (a *answered) expire(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.expireLocked(now)
}

// len returns how many answers are kept.
func (a *answered) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byKey)
}

// answerChunks holds the kept answers' records, appended to fixed-size
// chunks in the order they are kept; a chunk is released once its newest
// record is older than the ttl. Chunk numbers only grow, so a reference
// into a released chunk is recognised, never read from another. A record
// is the address's binary form, its length first, then the answer's
// bytes.
type answerChunks struct {
	chunks []answerChunk // chunks[0] is number base
	base   uint64
	spare  [][]byte // released chunks, reused
}

type answerChunk struct {
	buf    []byte
	lastAt int64 // when its newest record was written
}

const (
	answerChunkSize = 256 << 10
	answerSpares    = 4
)

func (c *answerChunks) write(ans answer, at int64) (chunk uint64, off, n uint32) {
	var addr [32]byte
	rec, _ := ans.to.AppendBinary(addr[:1:32])
	rec[0] = byte(len(rec) - 1)
	need := len(rec) + len(ans.data)
	last := len(c.chunks) - 1
	if last < 0 || cap(c.chunks[last].buf)-len(c.chunks[last].buf) < need {
		var buf []byte
		if need <= answerChunkSize && len(c.spare) > 0 {
			buf = c.spare[len(c.spare)-1][:0]
			c.spare = c.spare[:len(c.spare)-1]
		} else {
			buf = make([]byte, 0, max(answerChunkSize, need))
		}
		c.chunks = append(c.chunks, answerChunk{buf: buf})
		last++
	}
	ch := &c.chunks[last]
	off = uint32(len(ch.buf))
	ch.buf = append(append(ch.buf, rec...), ans.data...)
	ch.lastAt = max(ch.lastAt, at)
	return c.base + uint64(last), off, uint32(need)
}

// read returns a copy of a record's answer: the caller uses it after the
// lock is released, when its chunk may be reused.
func (c *answerChunks) read(ref answerRef) (answer, bool) {
	i := ref.chunk - c.base
	if ref.chunk < c.base || i >= uint64(len(c.chunks)) || uint64(ref.off)+uint64(ref.n) > uint64(len(c.chunks[i].buf)) {
		return answer{}, false
	}
	rec := c.chunks[i].buf[ref.off : ref.off+ref.n]
	alen := int(rec[0])
	var ans answer
	if 1+alen > len(rec) || ans.to.UnmarshalBinary(rec[1:1+alen]) != nil {
		return answer{}, false
	}
	ans.data = bytes.Clone(rec[1+alen:])
	return ans, true
}

// expire releases the chunks whose records all belong to entries at or
// before limit, keeping a few for reuse.
func (c *answerChunks) expire(limit int64) {
	n := 0
	for n < len(c.chunks) && c.chunks[n].lastAt <= limit {
		if buf := c.chunks[n].buf; cap(buf) == answerChunkSize && len(c.spare) < answerSpares {
			c.spare = append(c.spare, buf)
		}
		n++
	}
	if n == 0 {
		return
	}
	c.base += uint64(n)
	rest := copy(c.chunks, c.chunks[n:])
	clear(c.chunks[rest:])
	c.chunks = c.chunks[:rest]
	if rest == 0 {
		c.chunks, c.spare = nil, nil // idle: hold nothing
	}
}
