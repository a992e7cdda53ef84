package sipua

import (
	"github.com/emiago/sipgo/sip"
)

// Registration is what a REGISTER says.
type Registration struct {
	Domain  string
	User    string
	Contact sip.ContactHeader
	CallID  string
	CSeq    uint32
	// Expires is the Expires header; a negative one is left out.
	Expires int
}

// RegisterRequest builds the REGISTER of r: sip:domain as Request-URI,
// sip:user@domain as From (with a new tag) and To.
func RegisterRequest(r Registration) *sip.Request {
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: r.Domain})
	aor := sip.Uri{Scheme: "sip", User: r.User, Host: r.Domain}
	req.AppendHeader(&sip.FromHeader{Address: aor, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: aor})
	cid := sip.CallIDHeader(r.CallID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: r.CSeq, MethodName: sip.REGISTER})
	c := r.Contact
	req.AppendHeader(&c)
	if r.Expires >= 0 {
		e := sip.ExpiresHeader(r.Expires)
		req.AppendHeader(&e)
	}
	req.SetBody(nil)
	return req
}
