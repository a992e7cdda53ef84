// Package app wires gchd's parts together and owns their lifecycle: New
// builds every part and binds every listener (so that port errors surface
// before anything is served and ":0" works in tests), Run serves until its
// context ends and then stops the parts in reverse order.
package app

import (
	"context"
	"crypto/tls"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gchd/chat"
	"gchd/cluster"
	"gchd/configs"
	"gchd/httpapi"
	"gchd/limits"
	"gchd/metrics"
	"gchd/push"
	"gchd/registrar"
	"gchd/sipserver"
	"gchd/storage"
	"gchd/trace"
)

// accountCacheTTL is how long an account read for authentication is kept
// in memory (registrar.WithLookupCache).
const accountCacheTTL = 5 * time.Second

// The database's write probe (readiness) runs at most once per
// writeProbeInterval and fails when its commit takes over writeProbeTimeout:
// one tiny commit every 2 s costs nothing beside real traffic, and a full
// disk or a read-only database takes the node out of the load balancer
// within about 2 s.
const (
	writeProbeInterval = 2 * time.Second
	writeProbeTimeout  = 2 * time.Second
)

// Version is the build's version, set with -ldflags "-X gchd/app.Version=...".
var Version = "dev"

// App is a running gchd server.
type App struct {
	cfg      configs.Config
	log      *slog.Logger
	db       *storage.DB
	registry *prometheus.Registry
	metrics  *metrics.Metrics
	accounts *registrar.Accounts
	bindings *registrar.Bindings
	guards   guards
	node     string // this node's name (registrar.node or the host name)
	// membership is this node's lease among the nodes sharing the database.
	membership *cluster.Membership
	// link keeps this node in step with the others; nil on SQLite.
	link     *nodeLink
	writable httpapi.Check     // the database's write probe, cached
	serving  atomic.Bool       // every listener is serving
	stack    *sipserver.Stack  // the SIP listeners and user agent
	sender   *sipserver.Sender // deliveries and gchd's own MESSAGEs
	sip      *sipserver.Server
	hep      *trace.HEP     // the SIP mirror to Homer; nil: off
	push     *push.Notifier // pushes to sleeping phones; nil: off
	chat     *chat.Service
	dispatch *chat.Dispatcher
	api      *httpapi.Server

	httpServers []*httpServer
}

// httpServer is one bound HTTP or HTTPS listener.
type httpServer struct {
	name string // the setting that configured it
	srv  *http.Server
	ln   net.Listener
}

// New builds the server from cfg: it opens and migrates the database and
// binds every listener, but serves nothing until Run.
func New(ctx context.Context, cfg configs.Config, log *slog.Logger) (_ *App, err error) {
	a := &App{cfg: cfg, log: log, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			if a.membership != nil {
				a.membership.Leave() // a restart need not wait for the lease
			}
			a.close() // whatever was opened before the failure
		}
	}()
	a.metrics = metrics.New(a.registry, metrics.BuildInfo{Version: Version})
	a.metrics.InitDBOperations(storage.Operations())

	a.db, err = storage.Open(ctx, cfg.Database, storage.Options{
		MaxOpenConns:      cfg.Storage.MaxOpenConns,
		SQLiteSynchronous: cfg.Storage.SQLiteSynchronous,
		Observe:           a.metrics.DBTransaction,
	})
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	if a.db.Engine() == storage.Postgres {
		// One pool serves reads and writes: report it once.
		metrics.RegisterDBPools(a.registry, map[string]func() sql.DBStats{
			"pool": func() sql.DBStats { w, _ := a.db.Stats(); return w },
		})
	} else {
		metrics.RegisterDBPools(a.registry, map[string]func() sql.DBStats{
			"write": func() sql.DBStats { w, _ := a.db.Stats(); return w },
			"read":  func() sql.DBStats { _, r := a.db.Stats(); return r },
		})
	}

	// A password changed or an account deleted with the CLI while the
	// server runs takes effect within accountCacheTTL.
	a.accounts = registrar.NewAccounts(a.db.AccountStore(), cfg.Domain, registrar.WithLookupCache(accountCacheTTL))
	a.guards = newGuards(cfg.Limits)
	if err := a.buildSIP(ctx); err != nil {
		return nil, err
	}
	if err := a.joinCluster(ctx); err != nil {
		return nil, err
	}
	var copyToSender func(chat.Event)
	if cfg.Delivery.CopyToSender {
		copyToSender = a.sender.CopyToSender
	}
	deliverer := nodeDeliverer{next: a.sender, fenced: a.fenced}
	var link *nodeLink // set below, before the dispatcher runs
	if a.db.Engine() == storage.Postgres {
		deliverer.owner, deliverer.self = a.bindings.Owner, a.node
		deliverer.handOver = func(node string, mid chat.MID, login string) { link.handOver(node, mid, login) }
	}
	a.dispatch = chat.NewDispatcher(a.db.DeliveryStore(), deliverer, log.With("part", "delivery"), chat.DispatchOptions{
		Workers:        cfg.Delivery.Workers,
		Window:         cfg.Delivery.Window,
		AttemptTimeout: cfg.Delivery.AttemptTimeout,
		RetryMin:       cfg.Delivery.RetryMin,
		RetryMax:       cfg.Delivery.RetryMax,
		Retention:      cfg.Delivery.Retention,
		PurgeInterval:  cfg.Chat.PurgeInterval,
		CopyToSender:   copyToSender,
		Observe:        a.metrics.Delivery,
	})
	if a.db.Engine() == storage.Postgres {
		link = newNodeLink(a)
		a.link = link
	}
	metrics.RegisterPendingGauges(a.registry, func() (int, int, time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return a.dispatch.Pending(ctx)
	})
	a.chat = chat.NewService(a.db.ChatStore(),
		chat.WithPublisher(countingPublisher{next: a.dispatch, metrics: a.metrics}),
		chat.WithLogger(log.With("part", "chat")),
		chat.WithLimits(chat.Limits{
			MaxParticipants: cfg.Chat.MaxParticipants,
			MaxMessageBytes: cfg.Chat.MaxMessageBytes,
			MaxAvatarBytes:  cfg.Chat.MaxAvatarBytes,
			MaxVideoBytes:   cfg.Chat.MaxVideoBytes,

			MaxPendingPerSender: cfg.Chat.MaxPendingPerSender,
			MaxGroupsPerHour:    cfg.Chat.MaxGroupsPerHour,
			MaxImagePixels:      cfg.Chat.MaxImagePixels,
			MaxUploads:          cfg.Chat.MaxUploads,
			UploadWait:          cfg.Chat.UploadWait,
		}),
		chat.WithQuotaObserver(a.metrics.QuotaRefused),
	)
	registered := a.dispatch.Flush
	if a.link != nil {
		registered = a.link.registered
	}
	if a.sip, err = sipserver.New(a.stack, sipserver.Config{
		Accounts: a.accounts, Chat: a.chat, Sender: a.sender, Registered: registered,
	}); err != nil {
		return nil, err
	}
	// Nothing changes the log before Run: the streams start where it ends.
	if err := a.chat.OpenEvents(ctx); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	a.writable = httpapi.Cached(writeProbeInterval, writeProbeTimeout, func(ctx context.Context) error {
		return a.db.ProbeWrite(ctx, a.node)
	})
	metrics.RegisterReady(a.registry, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return a.serving.Load() && a.checkDatabase(ctx) == nil && a.writable(ctx) == nil && a.checkCluster(ctx) == nil
	})
	trustedProxies, _ := cfg.HTTP.TrustedProxyNetworks() // validated with the configuration
	a.api = httpapi.New(a.chat, a.accounts, a.metrics, log.With("part", "http"), httpapi.Options{
		Realm:          cfg.Domain,
		CodesInStatus:  cfg.API.CodesInStatus,
		MaxBodyBytes:   cfg.HTTP.MaxBodyBytes,
		TrustedProxies: trustedProxies,
		Events: httpapi.EventOptions{
			PerAccount:   cfg.HTTP.EventsPerAccount,
			PerSource:    cfg.HTTP.EventsPerSource,
			Keepalive:    cfg.HTTP.EventsKeepalive,
			WriteTimeout: cfg.HTTP.EventsWriteTimeout,
		},
		// A collector that fails (the pending-delivery query on a slow
		// database) must not fail the whole scrape: Prometheus would
		// record the server as down.
		Metrics: promhttp.HandlerFor(a.registry, promhttp.HandlerOpts{Registry: a.registry, ErrorHandling: promhttp.ContinueOnError,
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}),
		Ready: map[string]httpapi.Check{
			"database":          a.checkDatabase,
			"database_writable": a.writable,
			"cluster":           a.checkCluster,
			"listeners": func(context.Context) error {
				if !a.serving.Load() {
					return errors.New("not serving")
				}
				return nil
			},
		},
		Guards: httpapi.Guards{Rate: a.guards.httpRate, AuthSource: a.guards.authSource, AuthAccount: a.guards.authAccount},
	})
	if err := a.bindHTTP(); err != nil {
		return nil, err
	}
	return a, nil
}

// buildSIP builds the location service, binds the SIP listeners and builds
// the sender over them: the dispatcher is built on it, the SIP server last.
func (a *App) buildSIP(ctx context.Context) error {
	cfg := a.cfg
	node := cfg.Registrar.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	a.node = node
	var peer func(string) (int64, string, bool)
	if a.db.Engine() == storage.Postgres {
		peer = a.peer // SQLite is for one node: every binding is its own
	}
	a.bindings = registrar.NewBindings(a.db.BindingStore(), registrar.Policy{
		MinExpires:     cfg.Registrar.MinExpires,
		MaxExpires:     cfg.Registrar.MaxExpires,
		DefaultExpires: cfg.Registrar.DefaultExpires,
		MaxContacts:    cfg.Registrar.MaxContacts,
		RejectOverflow: cfg.Registrar.Overflow == "reject",
		Node:           node,
		RefreshWrite:   cfg.Registrar.RefreshWrite,
		Fenced:         a.fenced,
		Epoch:          a.epoch,
		Peer:           peer,
	}, a.log.With("part", "registrar"))
	n, err := a.bindings.Load(ctx)
	if err != nil {
		return err
	}
	a.log.Info("bindings loaded", "count", n)
	metrics.RegisterContactGauges(a.registry, a.bindings.Stats)
	secret, err := a.db.Secret(ctx, "sip-secret")
	if err != nil {
		return err
	}
	trusted, _ := cfg.SIP.TrustedNetworks() // validated with the configuration
	var peerAddress func(string) bool
	if peer != nil {
		peerAddress = a.isPeerAddress
	}
	var tlsConf *tls.Config
	if cfg.SIP.TLSAddr != "" || cfg.SIP.WSSAddr != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("tls.cert: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var mirror sipserver.Mirror
	if addr := cfg.Trace.HEPAddr; addr != "" {
		if a.hep, err = trace.NewHEP(addr, uint32(cfg.Trace.HEPAgentID), a.metrics.TraceDropped); err != nil {
			return fmt.Errorf("trace.hep_addr: %w", err)
		}
		mirror = a.hep // only a non-nil one: a nil *HEP would be a Mirror that is not nil
		a.log.Info("SIP mirrored to a HEP collector", "hep_addr", addr, "agent_id", cfg.Trace.HEPAgentID)
	}
	var pusher sipserver.Pusher
	if u := cfg.Push.GatewayURL; u != "" {
		a.push, err = push.New(push.Options{
			GatewayURL:  u,
			Coalesce:    cfg.Push.Coalesce,
			Timeout:     cfg.Push.Timeout,
			IncludeText: cfg.Push.IncludeText,
			Observe:     a.metrics.Push,
		}, a.log.With("part", "push"))
		if err != nil {
			return fmt.Errorf("push.gateway_url: %w", err)
		}
		a.metrics.InitPushOutcomes(push.Outcomes)
		pusher = pushAdapter{a.push} // only a non-nil one, as with the mirror
		a.log.Info("sleeping phones are woken through a push gateway", "push_gateway", redactURL(u), "answer_wait", cfg.Push.AnswerWait)
	}
	a.stack, err = sipserver.Listen(sipserver.Options{
		Domain:            cfg.Domain,
		Advertise:         cfg.SIP.Advertise,
		Aliases:           cfg.SIP.AliasList(),
		Addr:              cfg.SIP.Addr,
		WSAddr:            cfg.SIP.WSAddr,
		TLSAddr:           cfg.SIP.TLSAddr,
		WSSAddr:           cfg.SIP.WSSAddr,
		TLS:               tlsConf,
		UDPReadBuffer:     cfg.SIP.UDPReadBuffer,
		DigestAlgorithms:  cfg.SIP.DigestAlgorithmList(),
		NonceLifetime:     cfg.SIP.NonceLifetime,
		Trusted:           trusted,
		InviteTimeout:     cfg.SIP.InviteTimeout,
		IdleTimeout:       cfg.SIP.IdleTimeout,
		TransactionLinger: cfg.SIP.TransactionLinger,
		Secret:            secret,
		Peer:              peerAddress,
		Guards: sipserver.Guards{
			Rate: a.guards.sipRate, AuthSource: a.guards.authSource, AuthAccount: a.guards.authAccount, Conns: a.guards.sipConns,
		},
		Mirror:     mirror,
		Pusher:     pusher,
		AnswerWait: cfg.Push.AnswerWait,
	}, a.bindings, a.metrics, a.log.With("part", "sip"))
	if err != nil {
		return err
	}
	a.sender = sipserver.NewSender(a.stack)
	return nil
}

// SIPAddr returns the bound address of a SIP transport (UDP, TCP, TLS, WS, WSS).
func (a *App) SIPAddr(transport string) string { return a.stack.Addr(transport) }

// bindHTTP binds the HTTP and HTTPS listeners.
func (a *App) bindHTTP() error {
	handler := a.api.Handler()
	newServer := func() *http.Server {
		return &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute,
			WriteTimeout:      2 * time.Minute,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    1 << 20,
			ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
		}
	}
	capped := func(ln net.Listener) net.Listener {
		return a.guards.httpConns.Listener(ln, func() { a.metrics.LimitRejected("connections") })
	}
	if addr := a.cfg.HTTP.Addr; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("http.addr: %w", err)
		}
		a.httpServers = append(a.httpServers, &httpServer{name: "http.addr", srv: newServer(), ln: capped(ln)})
	}
	if addr := a.cfg.Debug.PprofAddr; addr != "" {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("debug.pprof_addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		srv := newServer()
		srv.Handler = mux
		srv.WriteTimeout = 0 // profiles stream for as long as asked
		a.httpServers = append(a.httpServers, &httpServer{name: "debug.pprof_addr", srv: srv, ln: ln})
	}
	if addr := a.cfg.HTTP.TLSAddr; addr != "" {
		cert, err := tls.LoadX509KeyPair(a.cfg.TLS.Cert, a.cfg.TLS.Key)
		if err != nil {
			return fmt.Errorf("tls.cert: %w", err)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("http.tls_addr: %w", err)
		}
		srv := newServer()
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		a.httpServers = append(a.httpServers, &httpServer{name: "http.tls_addr", srv: srv, ln: tls.NewListener(capped(ln), srv.TLSConfig)})
	}
	return nil
}

// listenAddr returns the bound address of the listener configured by setting
// (http.addr, http.tls_addr, debug.pprof_addr), "" if there is none.
func (a *App) listenAddr(setting string) string {
	for _, h := range a.httpServers {
		if h.name == setting {
			return h.ln.Addr().String()
		}
	}
	return ""
}

// HTTPAddr returns the bound address of the plain HTTP listener.
func (a *App) HTTPAddr() string { return a.listenAddr("http.addr") }

// Registry returns the metrics registry.
func (a *App) Registry() *prometheus.Registry { return a.registry }

func (a *App) checkDatabase(ctx context.Context) error {
	cur, known, err := a.db.AppliedVersion(ctx)
	if err != nil {
		return err
	}
	if cur != known {
		return fmt.Errorf("schema at version %d, want %d", cur, known)
	}
	return nil
}

// Run serves until ctx is done, then stops gracefully: listeners stop
// accepting, requests and deliveries in flight get cfg.Shutdown.Grace to
// finish, and the database is closed.
func (a *App) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, len(a.httpServers)+2)

	// The lease is held first and given up last: while this node serves,
	// the others know it is alive.
	memberCtx, stopMembership := context.WithCancel(context.WithoutCancel(ctx))
	memberDone := make(chan struct{})
	go func() {
		defer close(memberDone)
		a.membership.Run(memberCtx)
	}()
	// The link to the other nodes runs while this node delivers: the
	// dispatcher hands deliveries over through it.
	linkCtx, stopLink := context.WithCancel(context.WithoutCancel(ctx))
	linkDone := make(chan struct{})
	go func() {
		defer close(linkDone)
		if a.link != nil {
			a.link.Run(linkCtx)
		}
	}()
	bindingsCtx, stopBindings := context.WithCancel(context.WithoutCancel(ctx))
	bindingsDone := make(chan struct{})
	go func() {
		defer close(bindingsDone)
		a.bindings.Run(bindingsCtx)
	}()
	sipCtx, stopSIP := context.WithCancel(ctx)
	defer stopSIP()
	sipDone := make(chan struct{})
	go func() {
		defer close(sipDone)
		if err := a.sip.Serve(sipCtx); err != nil {
			errs <- err
		}
	}()

	// Pushes are asked for by deliveries: they stop after them.
	pushCtx, stopPush := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPush()
	pushDone := make(chan struct{})
	go func() {
		defer close(pushDone)
		if a.push != nil {
			a.push.Run(pushCtx)
		}
	}()
	dispatchCtx, stopDispatch := context.WithCancel(context.WithoutCancel(ctx))
	graceCtx, endGrace := context.WithCancel(context.Background())
	defer endGrace()
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.dispatch.Run(dispatchCtx, graceCtx)
	}()
	// Whatever is pending for users reachable now (over UDP flows that
	// survived the restart) goes out at once.
	for _, login := range a.bindings.Reachable() {
		a.dispatch.Flush(login)
	}

	for _, h := range a.httpServers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := h.srv.Serve(h.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errs <- fmt.Errorf("http %s: %w", h.ln.Addr(), err)
			}
		}()
	}
	a.serving.Store(true)
	a.log.Info("gchd serving", "version", Version, "domain", a.cfg.Domain, "sip", a.sip.Addr("UDP"),
		"sip_ws", a.sip.Addr("WS"), "sip_tls", a.sip.Addr("TLS"), "http", a.HTTPAddr(),
		"https", a.listenAddr("http.tls_addr"), "database", a.db.Engine())

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	a.serving.Store(false)
	a.log.Info("gchd stopping", "grace", a.cfg.Shutdown.Grace)

	// Reverse order: stop taking requests, let deliveries in flight finish
	// (they need the SIP stack), then close the stack, the registrar's
	// writer and the database.
	shutCtx, cancel := context.WithTimeout(context.Background(), a.cfg.Shutdown.Grace)
	defer cancel()
	stopSIP()
	<-sipDone
	// Event streams never finish by themselves, and Shutdown waits for
	// every request: end them first (their clients reconnect elsewhere or
	// later, with Last-Event-ID).
	a.chat.CloseEvents()
	for _, h := range a.httpServers {
		if err := h.srv.Shutdown(shutCtx); err != nil {
			h.srv.Close()
		}
	}
	go func() {
		<-shutCtx.Done()
		endGrace()
	}()
	stopDispatch()
	wg.Wait()
	stopPush()
	<-pushDone
	// In reverse order of building: the server, the sender, the stack.
	a.sip.Close()
	a.sender.Close()
	a.stack.Close()
	stopBindings()
	<-bindingsDone
	stopLink() // after the last binding write: its announcement goes out first
	<-linkDone
	stopMembership()
	<-memberDone
	a.close()
	a.log.Info("gchd stopped")
	return runErr
}

// redactURL hides a password in a URL for the log.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(unparsable)"
}

// close releases what New opened.
func (a *App) close() {
	for _, h := range a.httpServers {
		h.ln.Close()
	}
	if a.sip != nil {
		a.sip.Close()
	}
	if a.sender != nil {
		a.sender.Close()
	}
	if a.stack != nil {
		a.stack.Close()
	}
	if a.hep != nil {
		a.hep.Close() // after the SIP stack: nothing is captured any more
	}
	if a.db != nil {
		a.db.Close()
	}
}

// guards are the abuse limits. Login failures are shared by the SIP and
// HTTP faces: a password guesser gets no more tries by switching protocol.
// Connections are counted per face: a source's idle SIP connections must
// not lock it out of the API (nor its API clients out of SIP).
type guards struct {
	sipRate, httpRate       *limits.Rate
	authSource, authAccount *limits.Failures
	sipConns, httpConns     *limits.Conns
}

func newGuards(l configs.Limits) guards {
	return guards{
		sipRate:     limits.NewRate(l.SIPRate, l.SIPBurst),
		httpRate:    limits.NewRate(l.HTTPRate, l.HTTPBurst),
		authSource:  limits.NewFailures(l.AuthFailures, l.AuthWindow, l.AuthBan),
		authAccount: limits.NewFailures(l.AccountFailures, l.AuthWindow, l.AuthBan),
		sipConns:    limits.NewConns(l.SIPConnectionsPerSource),
		httpConns:   limits.NewConns(l.HTTPConnectionsPerSource),
	}
}

// Reload applies the settings that may change while gchd runs: the abuse
// limits (the log level belongs to whoever made the logger). Other changes
// need a restart; they are reported.
func (a *App) Reload(cfg configs.Config) {
	l := cfg.Limits
	a.guards.sipRate.Set(l.SIPRate, l.SIPBurst)
	a.guards.httpRate.Set(l.HTTPRate, l.HTTPBurst)
	a.guards.authSource.Set(l.AuthFailures, l.AuthWindow, l.AuthBan)
	a.guards.authAccount.Set(l.AccountFailures, l.AuthWindow, l.AuthBan)
	a.guards.sipConns.Set(l.SIPConnectionsPerSource)
	a.guards.httpConns.Set(l.HTTPConnectionsPerSource)
	restart := cfg
	restart.Limits, restart.Log.Level = a.cfg.Limits, a.cfg.Log.Level
	if restart != a.cfg {
		a.log.Warn("configuration changed beyond limits and log level (TLS certificates and log format included): restart gchd to apply it")
	}
	a.cfg.Limits, a.cfg.Log.Level = cfg.Limits, cfg.Log.Level
	a.log.Info("configuration reloaded", "limits", fmt.Sprintf("%+v", l), "log_level", cfg.Log.Level)
}

// countingPublisher counts committed events before passing them on.
type countingPublisher struct {
	next    chat.Publisher
	metrics *metrics.Metrics
}

func (p countingPublisher) Publish(ev chat.Event, recipients []string) {
	p.metrics.EventCommitted(ev.Source, string(ev.Kind), len(recipients))
	p.next.Publish(ev, recipients)
}
