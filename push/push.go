// Package push asks a push gateway to wake sleeping phones (RFC 8599). A
// phone app that its system suspended has no socket for gchd to write to;
// it registered with the address its push service knows it by (pn-provider,
// pn-prid, pn-param), and gchd hands that to the operator's gateway, which
// speaks to APNs or FCM. The request is a JSON POST in the style of
// Matrix's push gateway API (docs/operations.md gives the format).
//
// A Notifier never blocks its caller: requests wait in a bounded queue for
// a few workers, a device gets at most one push per coalescing window, and
// a gateway that fails is retried a few times with backoff, then given up:
// the delivery it was for still waits for the device's registration.
package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"
)

// Outcomes of a push, for Options.Observe.
const (
	OutcomeSent      = "sent"      // the gateway took it (2xx)
	OutcomeRetried   = "retried"   // an attempt failed (5xx, 408, 429, timeout, transport) and is tried again
	OutcomeFailed    = "failed"    // given up: refused (other answers, redirects) or still failing after the retries
	OutcomeRejected  = "rejected"  // the gateway rejected the device's pushkey; nothing goes to it until it registers again
	OutcomeCoalesced = "coalesced" // the device had a push within the coalescing window
	OutcomeDropped   = "dropped"   // the queue was full
)

// Outcomes lists every outcome, for metrics to start at zero.
var Outcomes = []string{OutcomeSent, OutcomeRetried, OutcomeFailed, OutcomeRejected, OutcomeCoalesced, OutcomeDropped}

// Options configure a Notifier.
type Options struct {
	// GatewayURL is where pushes are POSTed (http or https).
	GatewayURL string
	// Coalesce is the least time between two pushes to one device: a
	// burst of deliveries to a sleeping phone wakes it once.
	Coalesce time.Duration
	// Timeout bounds one attempt.
	Timeout time.Duration
	// IncludeText puts the start of a message's text in the push. Off, a
	// push names the conversation, the sender and the MID only: what a
	// lock screen shows, anyone holding the phone reads.
	IncludeText bool
	// Queue bounds the pushes waiting for a worker; beyond it they are
	// dropped.
	Queue int
	// Workers is how many requests are in flight at once.
	Workers int
	// Backoff is the wait before each retry; its length is the number of
	// retries.
	Backoff []time.Duration
	// Observe, when set, is told each outcome. It must not block.
	Observe func(outcome string)
	// Client sends the requests; nil: one that follows no redirects.
	Client *http.Client
}

// Defaults for the Options left zero.
const (
	DefaultCoalesce = 5 * time.Second
	DefaultTimeout  = 5 * time.Second
	DefaultQueue    = 1024
	DefaultWorkers  = 4
)

// DefaultBackoff is the wait before each of the retries.
var DefaultBackoff = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}

// textLimit bounds the characters of a message's text a push carries with
// IncludeText: a lock screen shows two lines or so, and APNs takes 4 KB.
const textLimit = 256

// forgetAfter is how long a device that got no push is remembered (its
// unread count, a rejected pushkey); a device that registers again is
// forgotten at once.
const forgetAfter = 24 * time.Hour

// Device is a phone's address at its push service, as it registered it.
type Device struct {
	Provider string // pn-provider: the push service (apns, fcm, ...)
	PRID     string // pn-prid: the device's address there
	Param    string // pn-param: what the service needs besides ("" if none)
}

type deviceKey struct{ provider, prid string }

func (d Device) key() deviceKey { return deviceKey{d.Provider, d.PRID} }

// Notification is an event waiting for a sleeping device.
type Notification struct {
	Device Device
	Login  string // the device's user, for the log
	// EventID is the MID of the event that waits.
	EventID string
	// Room is the conversation's SIP address: the group's, or the
	// sender's for a one-to-one message.
	Room string
	// Type is the event's kind: MSG (group text), DIR (a one-to-one
	// message), NG, EG, DG or DM.
	Type     string
	Sender   string // the sender's SIP address
	SenderDN string // the sender's display name
	Text     string // the message text; sent only with IncludeText
}

// message reports whether the notification is for text a user reads (and
// counts as unread).
func (n Notification) message() bool { return n.Type == "MSG" || n.Type == "DIR" }

// Notifier sends pushes. Notify queues, Run sends.
type Notifier struct {
	opts   Options
	log    *slog.Logger
	client *http.Client
	queue  chan request

	mu      sync.Mutex
	devices map[deviceKey]*deviceState
}

type deviceState struct {
	last     time.Time // of the last push queued; zero: none within the window
	unread   int       // messages that found the device asleep since it registered
	rejected bool      // the gateway rejected its pushkey
}

type request struct {
	n      Notification
	unread int
}

// New returns a Notifier for opts.GatewayURL; Run starts it.
func New(opts Options, log *slog.Logger) (*Notifier, error) {
	u, err := url.Parse(opts.GatewayURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("push gateway URL %q: want an http or https URL", opts.GatewayURL)
	}
	if opts.Coalesce <= 0 {
		opts.Coalesce = DefaultCoalesce
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Workers <= 0 {
		opts.Workers = DefaultWorkers
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	client := opts.Client
	if client == nil {
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.MaxIdleConnsPerHost = opts.Workers
		client = &http.Client{
			Transport: transport,
			// The gateway is the operator's: a redirect is a
			// misconfiguration to report, not a hop to follow with the
			// devices' pushkeys.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	return &Notifier{opts: opts, log: log, client: client, queue: make(chan request, opts.Queue),
		devices: map[deviceKey]*deviceState{}}, nil
}

// Notify queues a push for n's device unless it had one within the
// coalescing window, its pushkey was rejected or the queue is full; it
// reports whether it queued one. It never blocks.
func (p *Notifier) Notify(n Notification) bool {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.devices[n.Device.key()]
	if st == nil {
		st = &deviceState{}
		p.devices[n.Device.key()] = st
	}
	if n.message() {
		st.unread++
	}
	switch {
	case st.rejected:
		p.observe(OutcomeRejected)
		return false
	case !st.last.IsZero() && now.Sub(st.last) < p.opts.Coalesce:
		p.observe(OutcomeCoalesced)
		return false
	}
	select {
	case p.queue <- request{n: n, unread: st.unread}:
		st.last = now
		return true
	default:
		p.observe(OutcomeDropped)
		return false
	}
}

// Forget drops what is known of a device: it registered again (it is
// awake, and a later sleep gets a push at once, with a count from zero)
// or unregistered.
func (p *Notifier) Forget(d Device) {
	p.mu.Lock()
	delete(p.devices, d.key())
	p.mu.Unlock()
}

// Run sends queued pushes until ctx is done; requests in flight are cut
// short then, and what is still queued is dropped (the deliveries it was
// for wait in the database, and wake their devices again after a restart).
func (p *Notifier) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for range p.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case r := <-p.queue:
					p.send(ctx, r)
				}
			}
		}()
	}
	sweep := time.NewTicker(time.Hour)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-sweep.C:
			p.sweep(time.Now())
		}
	}
}

// sweep forgets devices that got no push for forgetAfter.
func (p *Notifier) sweep(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, st := range p.devices {
		if now.Sub(st.last) > forgetAfter {
			delete(p.devices, k)
		}
	}
}

// send posts one push, retrying what may pass on another try.
func (p *Notifier) send(ctx context.Context, r request) {
	body, err := json.Marshal(p.payload(r))
	if err != nil {
		p.observe(OutcomeFailed)
		p.log.Error("encode push", "login", r.n.Login, "error", err)
		return
	}
	for attempt := 0; ; attempt++ {
		status, rejected, err := p.post(ctx, body, r.n.Device.PRID)
		switch {
		case err == nil && status >= 200 && status < 300 && rejected:
			p.mu.Lock()
			if st := p.devices[r.n.Device.key()]; st != nil {
				st.rejected = true
			}
			p.mu.Unlock()
			p.observe(OutcomeRejected)
			p.log.Info("push gateway rejected a device's pushkey: no pushes to it until it registers again",
				"login", r.n.Login, "provider", r.n.Device.Provider)
			return
		case err == nil && status >= 200 && status < 300:
			p.observe(OutcomeSent)
			p.log.Debug("push sent", "login", r.n.Login, "provider", r.n.Device.Provider, "event_id", r.n.EventID)
			return
		case ctx.Err() != nil:
			return // stopping: the delivery waits in the database
		case temporary(status, err) && attempt < len(p.opts.Backoff):
			p.observe(OutcomeRetried)
			p.log.Debug("push will be retried", "login", r.n.Login, "status", status, "error", err, "in", p.opts.Backoff[attempt])
			t := time.NewTimer(p.opts.Backoff[attempt])
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		default:
			p.observe(OutcomeFailed)
			p.log.Warn("push failed", "login", r.n.Login, "provider", r.n.Device.Provider, "status", status,
				"attempts", attempt+1, "error", err)
			return
		}
	}
}

// temporary reports whether a failed attempt may pass on another try.
func temporary(status int, err error) bool {
	return err != nil || status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

// maxAnswer bounds the gateway's answer read: a list of rejected pushkeys.
const maxAnswer = 64 << 10

// post makes one attempt and returns the gateway's status and whether it
// listed prid as rejected.
func (p *Notifier) post(ctx context.Context, body []byte, prid string) (status int, rejected bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, p.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.opts.GatewayURL, bytes.NewReader(body))
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := p.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // without the URL, which may hold a secret
		}
		return 0, false, err
	}
	defer res.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(res.Body, maxAnswer))
	if res.StatusCode >= 200 && res.StatusCode < 300 {
		var a struct {
			Rejected []string `json:"rejected"`
		}
		if json.Unmarshal(answer, &a) == nil && slices.Contains(a.Rejected, prid) {
			rejected = true
		}
	}
	return res.StatusCode, rejected, nil
}

// The request body, in the style of Matrix's push gateway API.
type (
	payload struct {
		Notification notification `json:"notification"`
	}
	notification struct {
		EventID           string   `json:"event_id"`
		RoomID            string   `json:"room_id"`
		Type              string   `json:"type"`
		Sender            string   `json:"sender,omitempty"`
		SenderDisplayName string   `json:"sender_display_name,omitempty"`
		Prio              string   `json:"prio"`
		Content           *content `json:"content,omitempty"`
		Counts            counts   `json:"counts"`
		Devices           []device `json:"devices"`
	}
	content struct {
		Body string `json:"body"`
	}
	counts struct {
		Unread int `json:"unread"`
	}
	device struct {
		AppID   string            `json:"app_id"`
		PushKey string            `json:"pushkey"`
		Data    map[string]string `json:"data"`
	}
)

func (p *Notifier) payload(r request) payload {
	n := r.n
	prio := "low" // an edit or a deletion can wait for the phone's next wake
	if n.message() || n.Type == "NG" {
		prio = "high"
	}
	data := map[string]string{}
	if n.Device.Param != "" {
		data["pn-param"] = n.Device.Param
	}
	out := payload{Notification: notification{
		EventID: n.EventID, RoomID: n.Room, Type: n.Type, Sender: n.Sender, SenderDisplayName: n.SenderDN, Prio: prio,
		Counts:  counts{Unread: r.unread},
		Devices: []device{{AppID: n.Device.Provider, PushKey: n.Device.PRID, Data: data}},
	}}
	if p.opts.IncludeText && n.message() && n.Text != "" {
		out.Notification.Content = &content{Body: truncate(n.Text, textLimit)}
	}
	return out
}

// truncate cuts s to at most n characters, marking the cut.
func truncate(s string, n int) string {
	i := 0
	for j := range s {
		if i == n {
			return s[:j] + "…"
		}
		i++
	}
	return s
}

func (p *Notifier) observe(outcome string) {
	if p.opts.Observe != nil {
		p.opts.Observe(outcome)
	}
}
