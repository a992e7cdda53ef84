package sipserver

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/zlib"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/textproto"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
)

// Delivery and display notifications (IMDN, RFC 5438). Linphone answers
// every text it receives with a MESSAGE of type message/imdn+xml (often
// deflated, Content-Encoding: deflate) to the sender's address: "delivered"
// when it arrives, "displayed" when the user reads it. For a plain
// text/plain MESSAGE it names the message by the Call-ID it arrived with;
// inside CPIM it names it by the CPIM imdn.Message-ID. gchd's group
// deliveries therefore carry a Call-ID that names the group and MID, so a
// notification sent back to the group's address sets that member's cf or
// rd, as confMessage and readMessage do. Plain text stays plain: phones
// that send no receipts see nothing new.

// maxIMDN bounds an inflated notification: a real one is a few hundred
// bytes, and a deflated body must not grow without bound.
const maxIMDN = 16 << 10

// deliveredMID reads a message-id that deliveryCallID made (with or
// without its host) back into its group and MID.
func deliveredMID(messageID string) (chat.GroupID, chat.MID, bool) {
	id, _, _ := strings.Cut(strings.TrimSpace(messageID), "@")
	if !strings.HasPrefix(strings.ToLower(id), chat.GroupUserPrefix) {
		return 0, 0, false
	}
	parts := strings.Split(id[len(chat.GroupUserPrefix):], "-")
	if len(parts) != 3 {
		return 0, 0, false
	}
	gid, err1 := strconv.ParseUint(parts[0], 10, 32)
	mid, err2 := strconv.ParseUint(parts[1], 10, 64)
	if err1 != nil || err2 != nil || mid == 0 {
		return 0, 0, false
	}
	return chat.GroupID(gid), chat.MID(mid), true
}

// imdn is the part of an IMDN document gchd acts on.
type imdn struct {
	MessageID string      `xml:"message-id"`
	Delivery  *imdnStatus `xml:"delivery-notification"`
	Display   *imdnStatus `xml:"display-notification"`
}

type imdnStatus struct {
	Status struct {
		Delivered *struct{} `xml:"delivered"`
		Displayed *struct{} `xml:"displayed"`
	} `xml:"status"`
}

// isIMDN reports whether a MESSAGE carries a disposition notification,
// bare or inside CPIM.
func isIMDN(req *sip.Request) bool {
	ct := req.ContentType()
	if ct == nil {
		return false
	}
	mt, _, err := mime.ParseMediaType(ct.Value())
	if err != nil {
		return false
	}
	switch mt {
	case "message/imdn+xml":
		return true
	case "message/cpim":
		body, err := imdnBody(req)
		if err != nil {
			return false
		}
		_, inner, err := splitCPIM(body)
		return err == nil && inner == "message/imdn+xml"
	}
	return false
}

// imdnBody is the MESSAGE's body, inflated when it says it is deflated.
func imdnBody(req *sip.Request) ([]byte, error) {
	body := req.Body()
	enc := header(req, "Content-Encoding")
	if enc == nil || strings.EqualFold(strings.TrimSpace(enc.Value()), "identity") {
		return body, nil
	}
	if !strings.EqualFold(strings.TrimSpace(enc.Value()), "deflate") {
		return nil, fmt.Errorf("content encoding %q", enc.Value())
	}
	// "deflate" is zlib-wrapped (RFC 9110); some senders write it raw.
	var r io.ReadCloser
	if zr, err := zlib.NewReader(bytes.NewReader(body)); err == nil {
		r = zr
	} else {
		r = flate.NewReader(bytes.NewReader(body))
	}
	defer r.Close()
	out, err := io.ReadAll(io.LimitReader(r, maxIMDN+1))
	if err != nil {
		return nil, fmt.Errorf("inflate: %w", err)
	}
	if len(out) > maxIMDN {
		return nil, errors.New("inflated notification too large")
	}
	return out, nil
}

// splitCPIM returns the content of a message/cpim body (RFC 3862) and its
// content type.
func splitCPIM(body []byte) ([]byte, string, error) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(body)))
	if _, err := r.ReadMIMEHeader(); err != nil { // the CPIM message headers
		return nil, "", fmt.Errorf("cpim headers: %w", err)
	}
	h, err := r.ReadMIMEHeader() // the content's MIME headers
	if err != nil {
		return nil, "", fmt.Errorf("cpim content headers: %w", err)
	}
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	rest, err := io.ReadAll(r.R)
	if err != nil {
		return nil, "", err
	}
	return rest, mt, nil
}

// onGroupIMDN answers a disposition notification sent to a group's
// address by one of its members: one that names a message gchd delivered
// to that member records its receipt; any other well-formed one is
// acknowledged and dropped (a notification is never posted as text).
func (s *Server) onGroupIMDN(ctx context.Context, req *sip.Request, sender string, id chat.GroupID) *sip.Response {
	body, err := imdnBody(req)
	if err != nil {
		return newResponse(req, 400, "Bad Notification")
	}
	if mt, _, _ := mime.ParseMediaType(req.ContentType().Value()); mt == "message/cpim" {
		if body, _, err = splitCPIM(body); err != nil {
			return newResponse(req, 400, "Bad Notification")
		}
	}
	var doc imdn
	if err := xml.Unmarshal(body, &doc); err != nil || doc.MessageID == "" {
		return newResponse(req, 400, "Bad Notification")
	}
	gid, mid, ok := deliveredMID(doc.MessageID)
	if !ok || gid != id {
		return newResponse(req, 200, "OK") // not one of this group's deliveries
	}
	caller := chat.Caller{Login: sender}
	switch {
	case doc.Display != nil && doc.Display.Status.Displayed != nil:
		err = s.chat.ReadMessage(ctx, caller, id, mid)
	case doc.Delivery != nil && doc.Delivery.Status.Delivered != nil:
		err = s.chat.ConfirmMessage(ctx, caller, id, mid)
	default:
		return newResponse(req, 200, "OK") // processed, failed, forbidden: nothing to record
	}
	// An invitation's NG, a message since deleted, a member who left:
	// nothing to record, and nothing the phone could do.
	if err != nil && statusOf(err).code >= 500 {
		return s.refuse(req, err, "record receipt", "group", id, "mid", mid, "login", sender)
	}
	return newResponse(req, 200, "OK")
}
