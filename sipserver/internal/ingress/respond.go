package ingress

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Every response the server writes is written here, the way its request
// came:
//
//   - udpAnswer: a request the UDP reader took in (no transaction); the
//     final answer is kept for retransmissions;
//   - streamAnswer: a request taken in from a connection, answered on it;
//   - keptTransaction: a non-INVITE request of a sipgo transaction over
//     UDP; its final answer is kept too and the transaction ended;
//   - plainTransaction: any other request of a sipgo transaction;
//   - resend: a kept answer, again, to a retransmission;
//   - Stateless: a response that no transaction of ours carries.

// udpAnswer answers a request the UDP reader took in: begin marked it in
// progress under key.
type udpAnswer struct {
	in  *Ingress
	key string
}

func (a *udpAnswer) Respond(res *sip.Response) error {
	if res.StatusCode < 200 {
		return nil // no transaction carries it; the final answer follows
	}
	// The destination is the request's source address.
	to, err := netip.ParseAddrPort(res.Destination())
	conn, ok := a.in.udp.(*net.UDPConn)
	if err != nil || !ok {
		a.in.answers.forget(a.key)
		return fmt.Errorf("answer to %q over %T: %w", res.Destination(), a.in.udp, errors.ErrUnsupported)
	}
	return a.in.encoded(res, func(data []byte) error {
		a.in.answers.put(a.key, answer{data: data, to: to}, time.Now())
		return a.in.writeUDP(conn, data, to)
	})
}

func (a *udpAnswer) Unanswered() { a.in.answers.forget(a.key) }

// streamAnswer answers a request taken in from a connection, on it.
type streamAnswer struct {
	in   *Ingress
	conn net.Conn
}

func (a *streamAnswer) Respond(res *sip.Response) error {
	if res.StatusCode < 200 {
		return nil // no transaction carries it; the final answer follows
	}
	return a.in.encoded(res, func(b []byte) error {
		if err := a.conn.SetWriteDeadline(time.Now().Add(StreamWriteTimeout)); err != nil {
			return err
		}
		_, err := a.conn.Write(b)
		return err
	})
}

func (*streamAnswer) Unanswered() {}

// Transaction is a request's sipgo server transaction, with Respond
// sending its answers as the ingress does: the handler that relays
// responses itself (the proxy) answers through it too.
type Transaction interface {
	sip.ServerTransaction
	Responder
}

// Transaction returns the transaction through which req, a request of
// sipgo's transaction tx, is answered; answered is true when req is a
// retransmission of a request answered already, answered again here.
func (in *Ingress) Transaction(req *sip.Request, tx sip.ServerTransaction) (t Transaction, answered bool) {
	key, ok := answerKey(req)
	if !ok {
		return plainTransaction{tx}, false
	}
	if ans, ok := in.answers.get(key, time.Now()); ok {
		in.resend(ans, req)
		tx.Terminate()
		return nil, true
	}
	return &keptTransaction{ServerTransaction: tx, in: in, req: req, key: key}, false
}

// plainTransaction answers through sipgo's transaction.
type plainTransaction struct{ sip.ServerTransaction }

func (plainTransaction) Unanswered() {}

// keptTransaction answers a non-INVITE request over UDP of sipgo's
// transaction: its final answer is encoded once and written here, kept
// for retransmissions, and the transaction ended. Handing the answer to
// the transaction would encode it a second time and run its state
// machine only to end it, and sipgo would keep the whole transaction for
// Timer J's 32 s: under a steady relay, gigabytes of live heap.
type keptTransaction struct {
	sip.ServerTransaction
	in  *Ingress
	req *sip.Request
	key string
}

// Respond sends res. The order matters. The answer is kept before the
// transaction ends, so a retransmission never reaches the handler a
// second time, and the transaction ends before the answer is sent, so a
// retransmission the answer provokes is matched against the kept answer
// rather than swallowed by a transaction that has none.
func (t *keptTransaction) Respond(res *sip.Response) error {
	if res.StatusCode < 200 {
		return t.ServerTransaction.Respond(res)
	}
	// Where sipgo would send it: Via received/rport, else the sent-by.
	to, err := netip.ParseAddrPort(res.Destination())
	conn, ok := t.in.udp.(*net.UDPConn)
	if err != nil || !ok {
		// A sent-by that is a name: sipgo resolves it.
		defer t.ServerTransaction.Terminate()
		if err := t.ServerTransaction.Respond(res); err != nil {
			return err
		}
		if src, err := netip.ParseAddrPort(t.req.Source()); err == nil {
			t.in.encoded(res, func(data []byte) error {
				t.in.answers.put(t.key, answer{data: data, to: src}, time.Now())
				return nil
			})
		}
		return nil
	}
	return t.in.encoded(res, func(data []byte) error {
		t.in.answers.put(t.key, answer{data: data, to: to}, time.Now())
		t.ServerTransaction.Terminate()
		return t.in.writeUDP(conn, data, to)
	})
}

func (*keptTransaction) Unanswered() {}

// resend writes a kept answer again, for a retransmitted request.
func (in *Ingress) resend(ans answer, req *sip.Request) {
	conn, ok := in.udp.(*net.UDPConn)
	if !ok {
		return
	}
	if err := in.writeUDP(conn, ans.data, ans.to); err != nil {
		in.opts.Log.Debug("resend answer", "method", req.Method, "call_id", callID(req), "error", err)
	}
	if in.opts.Log.Enabled(context.Background(), slog.LevelDebug) {
		var from, to string
		if h := req.From(); h != nil {
			from = userAtHost(h.Address)
		}
		if h := req.To(); h != nil {
			to = userAtHost(h.Address)
		}
		in.opts.Log.Debug("sip answer again", "method", string(req.Method), "call_id", callID(req), "from", from,
			"to", to, "destination", ans.to.String(), "transport", "UDP")
	}
}

// Stateless writes a response that no transaction of ours carries (a
// 2xx retransmission relayed per RFC 6026) through sipgo's transport
// layer, which finds its connection.
func Stateless(srv *sipgo.Server, res *sip.Response) error {
	return srv.WriteResponse(res)
}

// encoded calls fn with res as it goes on the wire, in a pooled buffer
// that fn must not keep (answered keeps a copy): res.String() grows a
// builder several times and []byte() copies it again, on every answer: a
// large share of what a REGISTER allocated.
func (in *Ingress) encoded(res *sip.Response, fn func([]byte) error) error {
	buf, _ := in.encodeBufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	buf.Reset()
	res.StringWrite(buf)
	err := fn(buf.Bytes())
	in.encodeBufs.Put(buf)
	return err
}

// writeUDP sends a datagram the ingress encoded itself.
func (in *Ingress) writeUDP(conn *net.UDPConn, data []byte, to netip.AddrPort) error {
	_, err := conn.WriteToUDPAddrPort(data, to)
	if err == nil && in.opts.Mirror != nil {
		in.opts.Mirror.Capture(IPProtoUDP, AddrPort(conn.LocalAddr()), to, time.Now(), data)
	}
	return err
}

func callID(req *sip.Request) string {
	if h := req.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// userAtHost returns user@host of a URI: not its parameters, and never
// the password it may carry.
func userAtHost(u sip.Uri) string {
	if u.User == "" {
		return u.Host
	}
	return u.User + "@" + u.Host
}
