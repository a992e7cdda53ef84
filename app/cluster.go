package app

import (
	"context"
	"errors"
	"fmt"
	"net"

	"gchd/chat"
	"gchd/cluster"
	"gchd/metrics"
	"gchd/storage"
)

// joinCluster takes this node's row among the nodes sharing the database,
// once the SIP listeners are bound (their port is the node's address). On
// SQLite the row only keeps a second process off the database.
func (a *App) joinCluster(ctx context.Context) error {
	renewal := metrics.RegisterCluster(a.registry, a.liveNodes, a.fenced)
	m, err := cluster.Join(ctx, a.db.Nodes(), cluster.Options{
		Name:      a.node,
		Address:   a.nodeAddress(),
		Lease:     a.cfg.Cluster.Lease,
		Renew:     a.cfg.Cluster.Renew,
		Exclusive: a.db.Engine() == storage.SQLite,
		Setting:   "registrar.node (GCHD_REGISTRAR_NODE)",
		Log:       a.log.With("part", "cluster"),
		Observe:   renewal,
	})
	if err != nil {
		return err
	}
	a.membership = m
	return nil
}

// nodeAddress is where other nodes reach this one's SIP: the advertised
// host, else the listen IP, with the UDP port.
func (a *App) nodeAddress() string {
	host, port, err := net.SplitHostPort(a.stack.Addr("UDP"))
	if err != nil {
		return a.stack.Addr("UDP")
	}
	if a.cfg.SIP.Advertise != "" {
		host = a.cfg.SIP.Advertise
	} else if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = a.cfg.Domain
	}
	return net.JoinHostPort(host, port)
}

// liveNodes counts the nodes this one sees (none before it joined).
func (a *App) liveNodes() int {
	if a.membership == nil {
		return 0
	}
	return len(a.membership.Live())
}

// fenced reports whether this node must hold back (false before it joined).
func (a *App) fenced() bool { return a.membership != nil && a.membership.Fenced() }

// checkCluster is the readiness of this node's lease.
func (a *App) checkCluster(context.Context) error {
	if a.fenced() {
		return errors.New("fenced: the node's lease was not renewed in time")
	}
	return nil
}

// errFenced is what a delivery attempt gets while the node is fenced: the
// delivery stays a pending row and is tried again later, here once the
// fence lifts, or by the node its member registers with.
var errFenced = errors.New("node fenced: delivery held back")

// nodeDeliverer sends nothing while the node is fenced: another node may
// already act for the member's flows. On a cluster it sends only the
// deliveries of members whose newest flow this node holds, and hands the
// others to the node that does.
type nodeDeliverer struct {
	next   chat.Deliverer
	fenced func() bool
	// owner names the node that sends a member's deliveries; nil on a
	// database for one node.
	owner    func(login string) string
	self     string
	handOver func(node string, mid chat.MID, login string)
}

func (d nodeDeliverer) Deliver(ctx context.Context, ev chat.Event, login string) error {
	if d.fenced() {
		return fmt.Errorf("deliver MID %d to %s: %w", ev.MID, login, errFenced)
	}
	if d.owner != nil {
		if node := d.owner(login); node != "" && node != d.self {
			d.handOver(node, ev.MID, login)
			return fmt.Errorf("deliver MID %d to %s: %w (%s)", ev.MID, login, chat.ErrElsewhere, node)
		}
	}
	return d.next.Deliver(ctx, ev, login)
}

// peer is the registrar's view of another node (registrar.Policy.Peer).
func (a *App) peer(name string) (epoch int64, address string, live bool) {
	if a.membership == nil {
		return 0, "", false
	}
	n, ok := a.membership.Peer(name)
	return n.Epoch, n.Address, ok
}

// epoch is this node's current epoch, 0 before it joined.
func (a *App) epoch() int64 {
	if a.membership == nil {
		return 0
	}
	return a.membership.Epoch()
}

// isPeerAddress reports whether address (ip:port, as a dialer sees it) is
// a live node's SIP address: the one place this node opens a connection
// to. A node advertised by name is resolved.
func (a *App) isPeerAddress(address string) bool {
	if a.membership == nil {
		return false
	}
	for _, n := range a.membership.Live() {
		if n.Name == a.node {
			continue
		}
		if n.Address == address {
			return true
		}
		host, port, err := net.SplitHostPort(n.Address)
		if err != nil || net.ParseIP(host) != nil {
			continue
		}
		ips, err := net.LookupHost(host)
		if err != nil {
			continue
		}
		for _, ip := range ips {
			if net.JoinHostPort(ip, port) == address {
				return true
			}
		}
	}
	return false
}
