package sipua

import (
	"strings"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Callee answers the calls a phone gets: 180, then 200 with an SDP body,
// unless the offer holds "ring only" (then it rings until cancelled). It
// reports each ACK and BYE of an answered call on Acked and Byes, and any
// failure on Errs (a test reads it once the call is over).
type Callee struct {
	Acked, Byes chan struct{}
	Errs        chan error
	answered    atomic.Bool
}

// AnswerCalls sets p's INVITE, ACK and BYE handlers (before p serves) for
// the dialogs of contact.
func AnswerCalls(p *Phone, contact sip.Uri) *Callee {
	c := &Callee{Acked: make(chan struct{}, 4), Byes: make(chan struct{}, 4), Errs: make(chan error, 16)}
	dlg := sipgo.NewDialogServerCache(p.Client, sip.ContactHeader{Address: contact})
	p.Server.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		d, err := dlg.ReadInvite(req, tx)
		if err != nil {
			c.Errs <- err
			return
		}
		d.Respond(180, "Ringing", nil)
		if strings.Contains(string(req.Body()), "ring only") {
			<-d.Context().Done()
			return
		}
		c.answered.Store(true)
		// Respond waits for the ACK of the 2xx, which must cross the
		// server.
		if err := d.Respond(200, "OK", []byte("v=0\r\n"), sip.NewHeader("Content-Type", "application/sdp")); err != nil {
			c.Errs <- err
		}
		<-d.Context().Done()
	})
	p.Server.OnAck(func(req *sip.Request, tx sip.ServerTransaction) {
		if dlg.ReadAck(req, tx) == nil {
			c.Acked <- struct{}{}
		}
	})
	p.Server.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		if err := dlg.ReadBye(req, tx); err != nil {
			c.Errs <- err
		}
		c.Byes <- struct{}{}
	})
	return c
}

// Answered reports whether a call was answered.
func (c *Callee) Answered() bool { return c.answered.Load() }
