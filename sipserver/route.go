package sipserver

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"gchd/registrar"
)

// target is where one branch of a forwarded request goes.
type target struct {
	ruri      sip.Uri
	transport string // UDP, TCP, TLS, WS, WSS
	dest      string // ip:port of the flow, or of the node that holds it
	// relay is set when another node holds the flow: the request goes to
	// that node (dest, over UDP), which sends it down the flow.
	relay *relayHop
	// back, when set, is the flow our Record-Route facing the sender
	// names instead of the request's own: the node that handed over a
	// request over a connection is reached at its address over UDP.
	back *relayHop
}

// router finds where a request goes: the registered devices of a user, or
// the next hop of a dialog. It routes only to gchd's own users.
type router struct {
	reg   Registrar
	flows flowSigner
	// local reports whether a URI names this server, ours whether a host
	// is our domain (its users are ours).
	local func(sip.Uri) bool
	ours  func(host string) bool
	// alive reports whether a connection from source over transport is
	// open.
	alive func(transport, source string) bool
}

// targetsOf lists the reachable contacts of a user, each with its flow. A
// device asleep is left out: it was sent a push, and a MESSAGE for it is
// stored until it registers again.
func (r router) targetsOf(user string) []target {
	var out []target
	for _, b := range r.reg.Lookup(user) {
		if b.Asleep {
			continue
		}
		if t, ok := r.targetOf(b); ok {
			out = append(out, t)
		}
	}
	return out
}

// targetOf turns a binding into a target over its flow. A connection-held
// binding whose connection is gone is no target: behind NAT it cannot be
// dialed back.
func (r router) targetOf(b registrar.Binding) (target, bool) {
	var u sip.Uri
	if err := sip.ParseUri(b.URI, &u); err != nil {
		return target{}, false
	}
	policy := r.reg.Policy()
	if b.Reliable() && b.Node == policy.Node && !r.alive(b.Transport, b.Source) {
		return target{}, false
	}
	dest := b.Source
	if !b.NAT && !b.Reliable() {
		port := u.Port
		if port == 0 {
			port = sip.DefaultPort(b.Transport)
		}
		dest = net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port))
	}
	if policy.Peer != nil && b.Node != policy.Node {
		// Only the node that holds the flow can use it: a NAT lets in
		// only what comes from the address the phone registered with.
		_, address, live := policy.Peer(b.Node)
		if !live {
			return target{}, false
		}
		return target{ruri: u, transport: "UDP", dest: address, relay: &relayHop{transport: b.Transport, dest: dest}}, true
	}
	return target{ruri: u, transport: b.Transport, dest: dest}, true
}

// inDialogTarget strips our own Route entries and finds the next hop: the
// flow named by the signed token of the last of them, else the registered
// contact that the Request-URI names. It reports whether a valid token was
// there, or why there is no target. gchd routes only to its own users: a
// Route to anywhere else is refused (no open relay).
func (r router) inDialogTarget(req *sip.Request) (t target, signed bool, refusal string) {
	var flow string
	for rt := req.Route(); rt != nil && r.local(rt.Address); rt = req.Route() {
		if v, ok := rt.Address.UriParams.Get(flowParam); ok {
			flow = v
		}
		req.RemoveHeader("Route")
	}
	if flow != "" {
		if transport, source, ok := r.flows.openRouteToken(flow, callID(req)); ok {
			signed = true
			if next := req.Route(); next == nil || r.nodeEntry(next.Address, callID(req)) {
				// Down the flow, or on to the next gchd node of the
				// dialog, whose own entries come next in the Route: the
				// flow our entry names is the address that node sent
				// from.
				return target{ruri: req.Recipient, transport: transport, dest: source}, true, ""
			}
		}
	}
	if req.Route() != nil {
		return target{}, signed, "Relaying Forbidden"
	}
	if b, ok := r.reg.LookupURI(req.Recipient.String()); ok {
		if t, ok := r.targetOf(b); ok {
			t.ruri = req.Recipient
			return t, signed, ""
		}
	}
	if r.ours(req.Recipient.Host) && req.Recipient.User != "" {
		if ts := r.targetsOf(req.Recipient.User); len(ts) > 0 {
			ts[0].ruri = req.Recipient
			return ts[0], signed, ""
		}
	}
	return target{}, signed, "Not Found"
}

// nodeEntry reports whether a Route URI is another gchd node's
// Record-Route entry of this dialog: its token opens with the secret the
// nodes share.
func (r router) nodeEntry(u sip.Uri, callID string) bool {
	tok, ok := u.UriParams.Get(flowParam)
	if !ok {
		return false
	}
	_, _, ok = r.flows.openRouteToken(tok, callID)
	return ok
}

// flowAlive reports whether a connection from source over transport is open
// in sipgo's transport layer.
func (s *Stack) flowAlive(transport, source string) bool {
	c, err := s.ua.TransportLayer().GetConnection(sip.NetworkToLower(transport), source)
	if err != nil {
		return false
	}
	c.TryClose() // GetConnection took a reference
	return true
}
