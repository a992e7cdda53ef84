package sipserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"gchd/chat"
	"gchd/registrar"
)

// Sender writes gchd's own MESSAGEs over the stack: deliveries of chat
// events (it implements chat.Deliverer on its own, so the dispatcher is
// built before the chat service and the server), copies to a sender's
// other devices, typing notices and answers to commands.
type Sender struct {
	*Stack
	pusher Pusher        // nil: no pushes
	once   chan struct{} // a token per sendOnce request in flight
	tasks  *tasks        // copies, notices and answers in flight
}

// NewSender builds the sender over a stack.
func NewSender(st *Stack) *Sender {
	return &Sender{Stack: st, pusher: st.opts.Pusher, once: make(chan struct{}, maxOnce), tasks: newTasks()}
}

// Close stops the sends in flight and waits for them.
func (s *Sender) Close() { s.tasks.Stop() }

// Deliver sends one chat event to every reachable device of login as a SIP
// MESSAGE (it implements chat.Deliverer). The first 2xx is a delivery;
// 408, 480, 503, timeouts and transport errors are worth a retry; other
// refusals from every device are final.
//
// A device registered with push parameters (RFC 8599) is given
// AnswerWait to answer. One that does not, or that cannot be reached (its
// connection closed), sleeps: it is sent a push, and the delivery waits
// for its registration (chat.ErrAsleep), unless another device took it.
// One marked asleep is not written to again until it registers again.
func (s *Sender) Deliver(ctx context.Context, ev chat.Event, login string) error {
	if login == ev.Sender && ev.Kind == chat.KindMessage {
		// A sender is no recipient of her own text; a row for her is left
		// from before that rule, and is settled without sending anything.
		return nil
	}
	targets, sleepers := s.deliveryTargets(login)
	if len(targets) == 0 {
		if len(sleepers) > 0 {
			s.wake(ev, login, sleepers)
			return fmt.Errorf("deliver %d to %s: %w", ev.MID, login, chat.ErrAsleep)
		}
		return chat.ErrUnreachable
	}
	type outcome struct {
		t    deliveryTarget
		code int
		err  error
	}
	results := make(chan outcome, len(targets))
	send := func(ctx context.Context, t deliveryTarget) {
		tctx := ctx
		if t.push {
			var cancel context.CancelFunc
			tctx, cancel = context.WithTimeout(ctx, s.opts.AnswerWait)
			defer cancel()
		}
		code, err := s.sendEvent(tctx, ev, login, t.target)
		results <- outcome{t, code, err}
	}
	if len(targets) == 1 {
		// One device, the usual case: no goroutine to fork to. A member's
		// deliveries go one at a time, so each hand-off is on the path.
		send(ctx, targets[0])
	} else {
		// The branches a first 2xx leaves behind finish on their own,
		// under the sender's tasks: Close ends them too.
		for _, t := range targets {
			s.tasks.Go(func(stop context.Context) {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				defer context.AfterFunc(stop, cancel)()
				send(ctx, t)
			})
		}
	}
	var temporary error
	var last outcome
	for range targets {
		o := <-results
		switch {
		case o.err == nil && o.code >= 200 && o.code < 300:
			return nil // the other branches finish on their own
		case o.t.push && o.err != nil && ctx.Err() == nil:
			// No answer within AnswerWait, or the flow failed: the app
			// sleeps. Unless it registered again meanwhile (then it is
			// awake, and a retry reaches it).
			if s.reg.MarkAsleep(login, o.t.binding.Key(), o.t.binding.Updated) {
				sleepers = append(sleepers, o.t.binding)
			} else {
				temporary = fmt.Errorf("deliver %d to %s: %v; the device registered again meanwhile", ev.MID, login, o.err)
			}
		case o.err != nil, o.code == 408, o.code == 430, o.code == 480, o.code == 503:
			temporary = fmt.Errorf("deliver %d to %s: %v (status %d)", ev.MID, login, o.err, o.code)
		}
		last = o
	}
	if len(sleepers) > 0 {
		// Waiting for the sleepers' registration beats a retry of the
		// others: each retry would wake them again.
		s.wake(ev, login, sleepers)
		return fmt.Errorf("deliver %d to %s: %w", ev.MID, login, chat.ErrAsleep)
	}
	if temporary != nil {
		return temporary
	}
	return fmt.Errorf("deliver %d to %s: status %d: %w", ev.MID, login, last.code, chat.ErrRejected)
}

// deliveryTarget is a device a delivery is sent to; push marks one that
// can be woken, and is waited for AnswerWait only.
type deliveryTarget struct {
	target
	binding registrar.Binding
	push    bool
}

// deliveryTargets lists the devices of login a delivery is sent to, and,
// when pushes are on, those with push parameters that cannot take it now:
// asleep, or held by a connection that closed.
func (s *Sender) deliveryTargets(login string) (targets []deliveryTarget, sleepers []registrar.Binding) {
	for _, b := range s.reg.LookupAll(login) {
		push := s.pusher != nil && b.Push.Enabled()
		t, ok := target{}, false
		if !b.Unreachable && !b.Asleep {
			t, ok = s.route.targetOf(b)
		}
		switch {
		case ok:
			targets = append(targets, deliveryTarget{target: t, binding: b, push: push})
		case push:
			sleepers = append(sleepers, b)
		}
	}
	return targets, sleepers
}

// wake asks for a push to each sleeping device of login for ev (once per
// device, however many bindings name it).
func (s *Sender) wake(ev chat.Event, login string, sleepers []registrar.Binding) {
	group := s.GroupURI(ev.Group)
	room := group.String()
	if ev.Kind == chat.KindDirect {
		room = s.userURI(ev.Sender)
	}
	var woken []registrar.Push
	for _, b := range sleepers {
		if slices.Contains(woken, b.Push) {
			continue
		}
		woken = append(woken, b.Push)
		w := Wake{Device: b.Push, Login: login, Event: ev, Room: room}
		if ev.Sender != "" {
			w.Sender = s.userURI(ev.Sender)
		}
		s.pusher.Wake(w)
	}
}

// userURI is a user's SIP address.
func (s *Sender) userURI(login string) string {
	u := sip.Uri{Scheme: "sip", User: login, Host: s.opts.Domain}
	return u.String()
}

// flowKey names a device by the flow it talks over.
func flowKey(transport, source string) string { return transport + "|" + source }

// copyTimeout bounds a copy's transaction: a silent UDP phone is given up
// after 32 s (Timer F) anyway.
const copyTimeout = 32 * time.Second

// CopyToSender sends a copy of a member's own group message, marked
// X-GC-Copy: sent, to each of her devices registered now but the one it
// came from (every device when she posted over HTTP), for clients that keep
// their history in step (delivery.copy_to_sender). A copy is no delivery:
// it is sent once, never stored or retried, and sets no receipt. It does
// not block.
func (s *Sender) CopyToSender(ev chat.Event) {
	for _, b := range s.reg.Lookup(ev.Sender) {
		if b.Asleep || ev.Origin != "" && flowKey(b.Transport, b.Source) == ev.Origin {
			continue
		}
		t, ok := s.route.targetOf(b)
		if !ok {
			continue
		}
		req := s.eventRequest(ev, ev.Sender, t)
		req.AppendHeader(sip.NewHeader("X-GC-Copy", "sent"))
		s.sendOnce(req, copyTimeout)
	}
}

// maxOnce bounds the requests sendOnce has in flight (copies and typing
// notices): each holds a transaction for up to its timeout, and a phone
// that answers none of them must not make them pile up.
const maxOnce = 1024

// sendOnce sends a request that nothing records (a copy, a typing notice)
// from a goroutine of its own and reports whether it went: with maxOnce in
// flight it is dropped, as a lost datagram would be.
func (s *Sender) sendOnce(req *sip.Request, timeout time.Duration) bool {
	select {
	case s.once <- struct{}{}:
	default:
		s.metrics.LimitRejected("sip_send_once")
		return false
	}
	s.tasks.Go(func(ctx context.Context) {
		defer func() { <-s.once }()
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		start := time.Now()
		s.metrics.SIPRequestSent(string(req.Method))
		res, err := s.cli.Do(ctx, req)
		code := 0
		if err == nil && res != nil {
			code = res.StatusCode
		}
		s.metrics.SIPResponseReceived(string(req.Method), code, time.Since(start))
		if err != nil {
			s.log.Debug("send once", "method", req.Method, "to", req.Recipient.String(), "error", err)
		}
	})
	return true
}

// sendEvent sends one MESSAGE and returns the final status.
func (s *Sender) sendEvent(ctx context.Context, ev chat.Event, login string, t target) (int, error) {
	req := s.eventRequest(ev, login, t)
	start := time.Now()
	s.metrics.SIPRequestSent(string(sip.MESSAGE))
	tx, err := s.cli.TransactionRequest(ctx, req)
	chat.Sent(ctx) // written (or failed): the member's next delivery may go
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.Debug("sip request sent", "method", string(req.Method), "call_id", callID(req), "from", fromAddress(req),
			"to", toAddress(req), "destination", req.Destination(), "transport", req.Transport(), "mid", uint64(ev.MID), "error", err)
	}
	if err != nil {
		s.metrics.SIPResponseReceived(string(sip.MESSAGE), 0, time.Since(start))
		return 0, err
	}
	defer tx.Terminate()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			s.metrics.SIPResponseReceived(string(sip.MESSAGE), res.StatusCode, time.Since(start))
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("sip answer received", "status", res.StatusCode, "reason", res.Reason, "method", string(req.Method),
					"call_id", callID(req), "to", toAddress(req), "source", res.Source())
			}
			return res.StatusCode, nil
		case <-tx.Done():
			s.metrics.SIPResponseReceived(string(sip.MESSAGE), 0, time.Since(start))
			if err := tx.Err(); err != nil {
				return 0, err
			}
			return 0, errors.New("transaction ended without a response")
		case <-ctx.Done():
			s.metrics.SIPResponseReceived(string(sip.MESSAGE), 0, time.Since(start))
			return 0, ctx.Err()
		}
	}
}

// GroupURI is a group's SIP address.
func (s *Sender) GroupURI(id chat.GroupID) sip.Uri {
	return sip.Uri{Scheme: "sip", User: chat.GroupUserPrefix + strconv.FormatUint(uint64(id), 10), Host: s.opts.Domain}
}

// eventRequest builds the MESSAGE that carries an event to one device:
// group text and notifications come from the group's address (so a plain
// phone shows one conversation per group), a stored direct message from
// its sender.
func (s *Sender) eventRequest(ev chat.Event, login string, t target) *sip.Request {
	req := sip.NewRequest(sip.MESSAGE, *t.ruri.Clone())
	from := sip.FromHeader{Address: s.GroupURI(ev.Group), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(10))
	body, contentType := ev.Body, "text/plain;charset=UTF-8"
	switch {
	case ev.Kind == chat.KindDirect:
		from.Address = sip.Uri{Scheme: "sip", User: ev.Sender, Host: s.opts.Domain}
		from.DisplayName = quoteDisplayName(ev.SenderDN)
		contentType = ev.ContentType
		req.AppendHeader(sip.NewHeader("Date", ev.Time.UTC().Format(time.RFC1123)))
	case ev.Kind.IsNotification():
		body = ev.NotificationText()
	default:
		from.DisplayName = quoteDisplayName(ev.SenderDN)
	}
	req.AppendHeader(&from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: login, Host: s.opts.Domain}})
	req.AppendHeader(sip.NewHeader("Content-Type", contentType))
	if ev.Kind != chat.KindDirect {
		req.AppendHeader(sip.NewHeader("X-GC-GID", strconv.FormatUint(uint64(ev.Group), 10)))
		if ev.MID != 0 {
			cid := s.deliveryCallID(ev) // what a receipt names (imdn.go)
			req.AppendHeader(&cid)
		}
	}
	req.AppendHeader(sip.NewHeader("X-GC-MID", strconv.FormatUint(uint64(ev.MID), 10)))
	if ev.Kind == chat.KindMessage {
		// Logins are checked to be header-safe when accounts are made.
		req.AppendHeader(sip.NewHeader("X-GC-From", ev.Sender))
	}
	// Content-Length first: SetBody would otherwise search every header
	// for one, which cost more than building the rest of the request.
	length := sip.ContentLengthHeader(len(body))
	req.AppendHeader(&length)
	req.SetBody([]byte(body))
	s.aim(req, t)
	return req
}

// quoteDisplayName makes user-supplied text safe inside the quoted display
// name of a From header (RFC 3261 25.1 quoted-string): backslash and quote
// are escaped, and control characters, which could end the header line,
// become spaces.
func quoteDisplayName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\' || r == '"':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f || r == 0x2028 || r == 0x2029:
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// messageDevice sends text in a MESSAGE from group id to the device that
// sent req, over its flow (a command's answer).
// It is not kept for retries: the phone asked just now and can ask again.
func (s *Sender) messageDevice(req *sip.Request, id chat.GroupID, text string) {
	from := req.From()
	if from == nil {
		return
	}
	t := target{transport: strings.ToUpper(req.Transport()), dest: req.Source()}
	if c := req.Contact(); c != nil {
		t.ruri = *c.Address.Clone()
	} else {
		t.ruri = from.Address
	}
	ev := chat.Event{Group: id, Kind: chat.KindMessage, SenderDN: "gchd", Body: text}
	m := s.eventRequest(ev, from.Address.User, t)
	m.RemoveHeader("X-GC-MID")
	m.RemoveHeader("X-GC-From")
	s.tasks.Go(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 35*time.Second)
		defer cancel()
		s.metrics.SIPRequestSent(string(sip.MESSAGE))
		if _, err := s.cli.Do(ctx, m); err != nil {
			s.log.Debug("answer command", "group", id, "error", err)
		}
	})
}

// deliveryCallID is the Call-ID of one attempt to deliver a group's event:
// it names the group and MID and is unique per attempt.
func (s *Sender) deliveryCallID(ev chat.Event) sip.CallIDHeader {
	return sip.CallIDHeader(fmt.Sprintf("%s%d-%d-%s@%s", chat.GroupUserPrefix, ev.Group, ev.MID, sip.GenerateTagN(12), s.opts.Domain))
}
