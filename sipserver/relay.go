package sipserver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"gchd/metrics"
)

// Several gchd nodes share one database, and a phone's flow is held by the
// node it registered with. A request for a device whose flow another node
// holds goes to that node first, which sends it down the flow: the Path
// mechanism of RFC 3327 with the flow named in the Route, as RFC 5626's
// flow tokens do. The Route is signed with the secret the nodes share
// (it is in the database): a request from outside that carries a made-up
// one is refused, and one that carries a real one works only for the
// Call-ID it was made for. Phones never see these Routes: the node that
// holds the flow removes its own before it forwards.

// relayParam carries a relay token in the Route of a request handed to
// the node that holds its target's flow.
const relayParam = "gchd-relay"

// relayHop is the flow a request is to take on the node that holds it.
type relayHop struct {
	transport string // of the phone's flow, on that node
	dest      string
}

// relayToken signs a flow on another node for one request's Call-ID.
func (f flowSigner) relayToken(transport, dest, callID string) string {
	payload := transport + "|" + dest
	return base64.RawURLEncoding.EncodeToString(append([]byte(payload), f.relayMAC(payload, callID)...))
}

// openRelayToken returns the flow a relay token names, when it is valid
// for callID.
func (f flowSigner) openRelayToken(tok, callID string) (transport, dest string, ok bool) {
	payload, ok := f.open(tok, callID, f.relayMAC)
	if !ok {
		return "", "", false
	}
	return strings.Cut(payload, "|")
}

// relayMAC's input starts with "relay", which neither a Record-Route
// token's (a transport name) nor a branch's ("branch") does: no token
// passes for another kind.
func (f flowSigner) relayMAC(payload, callID string) []byte {
	m := hmac.New(sha256.New, f.secret)
	m.Write([]byte("relay\x00"))
	m.Write([]byte(payload))
	m.Write([]byte{0})
	m.Write([]byte(callID))
	return m.Sum(nil)[:macLen]
}

// aim points a request built or copied for t at its next hop: the flow
// itself, or the node that holds it, through a signed Route.
func (s *Stack) aim(req *sip.Request, t target) {
	if t.relay != nil && t.transport == "UDP" && len(req.String()) > maxRelayDatagram {
		// Too large for a datagram once the Via is on (RFC 3261 18.1.1):
		// the node listens on TCP at the same address.
		t.transport = "TCP"
	}
	req.SetTransport(t.transport)
	req.SetDestination(t.dest)
	if t.transport == "UDP" && s.udp != nil {
		// Send from the listening socket, the address the phone's NAT
		// knows, and the one other nodes know this node by.
		a := s.udp.LocalAddr().(*net.UDPAddr)
		req.Laddr = sip.Addr{IP: a.IP, Port: a.Port}
	}
	if t.relay == nil {
		return
	}
	host, port, err := sip.ParseAddr(t.dest)
	if err != nil {
		return
	}
	if req.CallID() == nil {
		// The token signs the Call-ID: it must be the one sent.
		cid := sip.CallIDHeader(sip.GenerateTagN(20) + "@" + s.opts.Domain)
		req.AppendHeader(&cid)
	}
	req.PrependHeader(&sip.RouteHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port,
		UriParams: sip.HeaderParams{
			{K: "lr", V: ""},
			{K: relayParam, V: s.flows.relayToken(t.relay.transport, t.relay.dest, callID(req))},
		}}})
}

// maxRelayDatagram is the largest request handed to another node over
// UDP before its Via is added: RFC 3261 18.1.1 sends more than 1300 bytes
// over a congestion-controlled transport.
const maxRelayDatagram = 1100

// relayedFlow reports whether req was handed over by another node: its top
// Route is ours and carries a relay token. It removes that Route and
// returns the flow, or ok false with the refusal when the token is not
// valid.
func (s *Server) relayedFlow(req *sip.Request) (t target, relayed bool, refusal *sip.Response) {
	rt := req.Route()
	if rt == nil || !s.isUs(rt.Address) {
		return target{}, false, nil
	}
	tok, ok := rt.Address.UriParams.Get(relayParam)
	if !ok {
		return target{}, false, nil
	}
	transport, dest, ok := s.flows.openRelayToken(tok, callID(req))
	if !ok {
		s.metrics.SIPAuthFailure(metrics.AuthNodeSignature)
		return target{}, true, newResponse(req, 403, "Forbidden: Bad Node Signature")
	}
	req.RemoveHeader("Route")
	return target{ruri: req.Recipient, transport: transport, dest: dest}, true, nil
}

// proxyRelayed sends a request another node handed over down the flow it
// names. That node authenticated the sender and cleaned the request; this
// one stays on the dialog's route too (Record-Route), so that the
// dialog's later requests find the flow. A connection that is gone
// answers 430 (RFC 5626): the other node stores a MESSAGE for later.
func (s *Server) proxyRelayed(ctx context.Context, req *sip.Request, tx sip.ServerTransaction, t target) *sip.Response {
	if t.transport != "UDP" && !s.flowAlive(t.transport, t.dest) {
		return newResponse(req, 430, "Flow Failed")
	}
	s.metrics.SIPRelayed(string(req.Method), "in")
	recordRoute := dialogCreating(req.Method)
	if to := req.To(); to != nil && to.Params.Has("tag") {
		recordRoute = false
	}
	if via := req.Via(); via != nil && !strings.EqualFold(req.Transport(), "UDP") {
		// Handed over on a connection (a request too large for a
		// datagram): the dialog comes back to the node's address over
		// UDP, which outlives the connection.
		port := via.Port
		if port == 0 {
			port = 5060
		}
		t.back = &relayHop{transport: "UDP", dest: net.JoinHostPort(via.Host, strconv.Itoa(port))}
	}
	return s.fork(ctx, req, tx, []target{t}, recordRoute, nil)
}
