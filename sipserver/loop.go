package sipserver

import (
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// loopKey identifies a request for loop detection (RFC 3261 16.3 step 4):
// the same request coming back with our Via on it is a loop, the same
// dialog with another Request-URI is a spiral.
func loopKey(req *sip.Request) string {
	h := fnv.New64a()
	h.Write([]byte(req.Recipient.String()))
	if f := req.From(); f != nil {
		h.Write([]byte(f.Params.GetOr("tag", "")))
	}
	h.Write([]byte(callID(req)))
	if c := req.CSeq(); c != nil {
		h.Write([]byte(strconv.FormatUint(uint64(c.SeqNo), 10)))
	}
	return strconv.FormatUint(h.Sum64(), 36)
}

// looped reports whether req already passed through us unchanged: one of
// its Vias is ours (local) with a branch carrying the request's loop key.
func looped(req *sip.Request, local func(sip.Uri) bool) bool {
	key := branchMagic + loopKey(req) + "-"
	for h := range headersNamed(req, "Via") {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		if b, _ := v.Params.Get("branch"); strings.HasPrefix(b, key) && local(sip.Uri{Host: v.Host, Port: v.Port}) {
			return true
		}
	}
	return false
}
