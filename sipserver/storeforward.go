package sipserver

import (
	"context"
	"strconv"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
)

// storeForLater keeps a MESSAGE for a user without a reachable device and
// answers 202: it is delivered when the user registers.
func (s *Server) storeForLater(ctx context.Context, req *sip.Request, sender, to string) *sip.Response {
	text, bad := textBody(req)
	if bad != nil && bad.StatusCode == 415 {
		// Only text is kept; other bodies (isComposing, receipts) are
		// meaningful only now.
		return newResponse(req, 480, "Temporarily Unavailable")
	}
	if bad != nil {
		return bad // empty, or not UTF-8 text: refused as a post to a group is
	}
	ct := "text/plain;charset=UTF-8"
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	mid, err := s.chat.StoreDirect(ctx, chat.Caller{Login: sender}, chat.Direct{To: to, DisplayName: fromDisplayName(req), ContentType: ct, Text: text})
	if err != nil {
		return s.refuse(req, err, "store message", "to", to)
	}
	res := newResponse(req, 202, "Accepted")
	res.AppendHeader(sip.NewHeader("X-GC-MID", strconv.FormatUint(uint64(mid), 10)))
	return res
}
