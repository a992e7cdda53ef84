package configs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Validate checks every setting and returns all problems at once, each
// naming the setting and where it can be changed.
func (c Config) Validate() error {
	var errs []error
	bad := func(path string, value any, why string) {
		for _, s := range Settings() {
			if s.Path == path {
				errs = append(errs, fmt.Errorf("invalid %s %v: %s (set with -%s, %s or %s in the config file)", path, quote(value), why, s.Flag, s.Env, path))
				return
			}
		}
		errs = append(errs, fmt.Errorf("invalid %s %v: %s", path, quote(value), why))
	}

	if err := checkHost(c.Domain); err != nil {
		bad("domain", c.Domain, err.Error())
	}
	switch {
	case strings.HasPrefix(c.Database, "sqlite:"):
		if strings.TrimPrefix(strings.TrimPrefix(c.Database, "sqlite:"), "//") == "" {
			bad("database", c.Database, "sqlite: needs a file path, e.g. sqlite:./data/gchd.db")
		}
	case strings.HasPrefix(c.Database, "postgres://"), strings.HasPrefix(c.Database, "postgresql://"):
	default:
		bad("database", redact(c.Database), "want sqlite:PATH or postgres://USER@HOST/DB?sslmode=disable")
	}
	addrs := []struct {
		path, value string
	}{
		{"sip.addr", c.SIP.Addr}, {"sip.ws_addr", c.SIP.WSAddr}, {"sip.tls_addr", c.SIP.TLSAddr},
		{"sip.wss_addr", c.SIP.WSSAddr}, {"http.addr", c.HTTP.Addr}, {"http.tls_addr", c.HTTP.TLSAddr},
		{"debug.pprof_addr", c.Debug.PprofAddr},
	}
	for _, a := range addrs {
		if a.value == "" {
			continue
		}
		if err := checkListenAddr(a.value); err != nil {
			bad(a.path, a.value, err.Error())
		}
	}
	if c.Cluster.Lease < 500*time.Millisecond {
		bad("cluster.lease", c.Cluster.Lease, "at least 500ms")
	}
	if c.Cluster.Renew <= 0 || c.Cluster.Renew > c.Cluster.Lease/2 {
		bad("cluster.renew", c.Cluster.Renew, fmt.Sprintf("more than 0 and at most half of cluster.lease (%v), so that one lost renewal does not fence the node", c.Cluster.Lease))
	}
	if c.Trace.HEPAddr != "" {
		host, port, err := net.SplitHostPort(c.Trace.HEPAddr)
		p, perr := strconv.Atoi(port)
		switch {
		case err != nil:
			bad("trace.hep_addr", c.Trace.HEPAddr, "want host:port of the HEP collector, e.g. 127.0.0.1:9060")
		case host == "":
			bad("trace.hep_addr", c.Trace.HEPAddr, "the collector's host is missing")
		case perr != nil || p < 1 || p > 65535:
			bad("trace.hep_addr", c.Trace.HEPAddr, "the port must be 1 to 65535")
		}
	}
	if c.Trace.HEPAgentID < 0 || c.Trace.HEPAgentID > 1<<32-1 {
		bad("trace.hep_agent_id", c.Trace.HEPAgentID, "want 0 to 4294967295")
	}
	if c.SIP.Addr == "" && c.SIP.WSAddr == "" && c.SIP.TLSAddr == "" && c.SIP.WSSAddr == "" {
		bad("sip.addr", c.SIP.Addr, "no SIP listener is configured")
	}
	if c.HTTP.Addr == "" && c.HTTP.TLSAddr == "" {
		bad("http.addr", c.HTTP.Addr, "no HTTP listener is configured")
	}
	if c.NeedsTLS() {
		switch {
		case c.TLS.Cert == "":
			bad("tls.cert", c.TLS.Cert, "a TLS listener is configured but no certificate")
		case c.TLS.Key == "":
			bad("tls.key", c.TLS.Key, "a TLS listener is configured but no key")
		default:
			if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
				bad("tls.cert", c.TLS.Cert, "cannot load certificate and key: "+err.Error())
			}
		}
	}
	if c.SIP.Advertise != "" {
		if err := checkHost(c.SIP.Advertise); err != nil {
			bad("sip.advertise", c.SIP.Advertise, err.Error())
		}
	}
	for _, a := range c.SIP.AliasList() {
		if err := checkHost(a); err != nil {
			bad("sip.aliases", a, err.Error())
		}
	}
	if c.SIP.UDPReadBuffer < 0 {
		bad("sip.udp_read_buffer", c.SIP.UDPReadBuffer, "must not be negative")
	}
	algs := c.SIP.DigestAlgorithmList()
	if len(algs) == 0 {
		bad("sip.digest_algorithms", c.SIP.DigestAlgorithms, "name at least one of MD5 and SHA-256")
	}
	for _, a := range algs {
		if a != "MD5" && a != "SHA-256" {
			bad("sip.digest_algorithms", c.SIP.DigestAlgorithms, "only MD5 and SHA-256 are supported")
			break
		}
	}
	if _, err := c.SIP.TrustedNetworks(); err != nil {
		bad("sip.trusted", c.SIP.Trusted, err.Error())
	}
	if _, err := c.HTTP.TrustedProxyNetworks(); err != nil {
		bad("http.trusted_proxies", c.HTTP.TrustedProxies, err.Error())
	}
	if c.SIP.NonceLifetime < 10*time.Second {
		bad("sip.nonce_lifetime", c.SIP.NonceLifetime, "must be at least 10s")
	}
	if c.SIP.TransactionLinger != 0 && (c.SIP.TransactionLinger < time.Second || c.SIP.TransactionLinger > time.Minute) {
		bad("sip.transaction_linger", c.SIP.TransactionLinger, "must be 0 (64*T1, 32s) or between 1s and 1m")
	}
	if c.SIP.InviteTimeout < time.Second {
		bad("sip.invite_timeout", c.SIP.InviteTimeout, "must be at least 1s")
	}
	if c.SIP.IdleTimeout < 10*time.Second {
		bad("sip.idle_timeout", c.SIP.IdleTimeout, "must be at least 10s (longer than the phones' keep-alive interval)")
	}
	if c.Registrar.MinExpires < time.Second || c.Registrar.MinExpires > c.Registrar.MaxExpires {
		bad("registrar.min_expires", c.Registrar.MinExpires, "must be at least 1s and at most registrar.max_expires")
	}
	if c.Registrar.DefaultExpires < c.Registrar.MinExpires || c.Registrar.DefaultExpires > c.Registrar.MaxExpires {
		bad("registrar.default_expires", c.Registrar.DefaultExpires, "must lie between registrar.min_expires and registrar.max_expires")
	}
	if c.Registrar.MaxContacts < 1 {
		bad("registrar.max_contacts", c.Registrar.MaxContacts, "must be at least 1")
	}
	if c.Registrar.RefreshWrite < 0 || c.Registrar.RefreshWrite > c.Registrar.MinExpires/2 {
		bad("registrar.refresh_write", c.Registrar.RefreshWrite, "must lie between 0 and half of registrar.min_expires (a binding's stored expiry may lag by this much)")
	}
	if c.Registrar.Overflow != "replace" && c.Registrar.Overflow != "reject" {
		bad("registrar.overflow", c.Registrar.Overflow, "want replace or reject")
	}
	// A message whose every byte is escaped in JSON (\u0001) and again in
	// the form (%5Cu0001) takes 8 bytes a byte, and pm has more fields.
	if need := 8*int64(c.Chat.MaxMessageBytes) + 4096; c.HTTP.MaxBodyBytes < need {
		bad("http.max_body_bytes", c.HTTP.MaxBodyBytes, fmt.Sprintf("must be at least %d: 8 times chat.max_message_bytes (a message escaped in JSON and in the form) and 4096 for the rest", need))
	}
	if c.HTTP.EventsPerAccount < 0 {
		bad("http.events_per_account", c.HTTP.EventsPerAccount, "must not be negative (0: no bound)")
	}
	if c.HTTP.EventsPerSource < 0 {
		bad("http.events_per_source", c.HTTP.EventsPerSource, "must not be negative (0: no bound)")
	}
	if c.HTTP.EventsKeepalive < 100*time.Millisecond || c.HTTP.EventsKeepalive > 10*time.Minute {
		bad("http.events_keepalive", c.HTTP.EventsKeepalive, "must be between 100ms and 10m (proxies close idle connections after about a minute)")
	}
	if c.HTTP.EventsWriteTimeout < 100*time.Millisecond || c.HTTP.EventsWriteTimeout > 10*time.Minute {
		bad("http.events_write_timeout", c.HTTP.EventsWriteTimeout, "must be between 100ms and 10m")
	}
	if c.Storage.MaxOpenConns < 0 {
		bad("storage.max_open_conns", c.Storage.MaxOpenConns, "must not be negative")
	}
	switch strings.ToUpper(c.Storage.SQLiteSynchronous) {
	case "FULL", "NORMAL", "EXTRA":
	default:
		bad("storage.sqlite_synchronous", c.Storage.SQLiteSynchronous, "want FULL, NORMAL or EXTRA")
	}
	if c.Chat.MaxParticipants < 2 {
		bad("chat.max_participants", c.Chat.MaxParticipants, "must be at least 2")
	}
	if c.Chat.MaxMessageBytes < 1 || c.Chat.MaxMessageBytes > 1<<20 {
		bad("chat.max_message_bytes", c.Chat.MaxMessageBytes, "must be between 1 and 1048576")
	}
	if c.Chat.MaxAvatarBytes < 1 {
		bad("chat.max_avatar_bytes", c.Chat.MaxAvatarBytes, "must be positive")
	}
	if c.Chat.MaxVideoBytes < 1 {
		bad("chat.max_video_bytes", c.Chat.MaxVideoBytes, "must be positive")
	}
	if c.Chat.MaxPendingPerSender < 0 {
		bad("chat.max_pending_per_sender", c.Chat.MaxPendingPerSender, "must not be negative (0 turns the quota off)")
	}
	if c.Chat.MaxGroupsPerHour < 0 {
		bad("chat.max_groups_per_hour", c.Chat.MaxGroupsPerHour, "must not be negative (0 turns the quota off)")
	}
	if c.Chat.PurgeInterval < 100*time.Millisecond || c.Chat.PurgeInterval > time.Hour {
		bad("chat.purge_interval", c.Chat.PurgeInterval, "must be between 100ms and 1h")
	}
	if c.Chat.MaxImagePixels < 1 || c.Chat.MaxImagePixels > 64<<20 {
		bad("chat.max_image_pixels", c.Chat.MaxImagePixels, "must be between 1 and 67108864 (a decode takes up to about 20 bytes a pixel)")
	}
	if c.Chat.MaxUploads < 1 || c.Chat.MaxUploads > 1024 {
		bad("chat.max_concurrent_uploads", c.Chat.MaxUploads, "must be between 1 and 1024")
	}
	if c.Chat.UploadWait < 0 || c.Chat.UploadWait > time.Minute {
		bad("chat.upload_wait", c.Chat.UploadWait, "must lie between 0 and 1m")
	}
	if c.Delivery.Workers < 1 || c.Delivery.Workers > 100000 {
		bad("delivery.workers", c.Delivery.Workers, "must be between 1 and 100000")
	}
	if c.Delivery.Window < 1 || c.Delivery.Window > 64 {
		bad("delivery.window", c.Delivery.Window, "must be between 1 and 64")
	}
	if c.Delivery.AttemptTimeout < time.Second {
		bad("delivery.attempt_timeout", c.Delivery.AttemptTimeout, "must be at least 1s")
	}
	if c.Delivery.RetryMin < 100*time.Millisecond || c.Delivery.RetryMin > c.Delivery.RetryMax {
		bad("delivery.retry_min", c.Delivery.RetryMin, "must be at least 100ms and at most delivery.retry_max")
	}
	if c.Delivery.Retention < time.Minute {
		bad("delivery.retention", c.Delivery.Retention, "must be at least 1m")
	}
	if c.Push.GatewayURL != "" {
		u, err := url.Parse(c.Push.GatewayURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			shown := c.Push.GatewayURL
			if err == nil {
				shown = u.Redacted()
			}
			bad("push.gateway_url", shown, "want the http or https URL of the push gateway, e.g. https://push.example.com/_matrix/push/v1/notify")
		}
	}
	if c.Push.Coalesce < time.Second || c.Push.Coalesce > time.Hour {
		bad("push.coalesce", c.Push.Coalesce, "must be between 1s and 1h")
	}
	if c.Push.Timeout < time.Second || c.Push.Timeout > time.Minute {
		bad("push.timeout", c.Push.Timeout, "must be between 1s and 1m")
	}
	if c.Push.AnswerWait < 100*time.Millisecond || c.Push.AnswerWait >= c.Delivery.AttemptTimeout {
		bad("push.answer_wait", c.Push.AnswerWait, "must be at least 100ms and shorter than delivery.attempt_timeout")
	}
	l := c.Limits
	for _, v := range []struct {
		path  string
		value float64
	}{{"limits.sip_rate", l.SIPRate}, {"limits.http_rate", l.HTTPRate}} {
		if v.value < 0 {
			bad(v.path, v.value, "must not be negative")
		}
	}
	for _, v := range []struct {
		path  string
		value int
	}{{"limits.sip_burst", l.SIPBurst}, {"limits.http_burst", l.HTTPBurst}, {"limits.auth_failures", l.AuthFailures},
		{"limits.account_failures", l.AccountFailures}, {"limits.sip_connections_per_source", l.SIPConnectionsPerSource},
		{"limits.http_connections_per_source", l.HTTPConnectionsPerSource}} {
		if v.value < 0 {
			bad(v.path, v.value, "must not be negative")
		}
	}
	if (l.AuthFailures > 0 || l.AccountFailures > 0) && (l.AuthWindow < time.Second || l.AuthBan < time.Second) {
		bad("limits.auth_window", l.AuthWindow, "limits.auth_window and limits.auth_ban must be at least 1s")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", c.Log.Level, "want debug, info, warn or error")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", c.Log.Format, "want text or json")
	}
	if c.Shutdown.Grace < 0 {
		bad("shutdown.grace", c.Shutdown.Grace, "must not be negative")
	}
	return errors.Join(errs...)
}

// AliasList splits sip.aliases.
func (s SIP) AliasList() []string { return splitList(s.Aliases) }

// DigestAlgorithmList splits sip.digest_algorithms, upper-cased.
func (s SIP) DigestAlgorithmList() []string {
	out := splitList(s.DigestAlgorithms)
	for i := range out {
		out[i] = strings.ToUpper(out[i])
	}
	return out
}

// TrustedNetworks parses sip.trusted.
func (s SIP) TrustedNetworks() ([]netip.Prefix, error) { return parseNetworks(s.Trusted) }

// TrustedProxyNetworks parses http.trusted_proxies.
func (h HTTP) TrustedProxyNetworks() ([]netip.Prefix, error) { return parseNetworks(h.TrustedProxies) }

// parseNetworks parses a comma-separated list of networks; a bare address
// is a network of one.
func parseNetworks(list string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitList(list) {
		if !strings.Contains(v, "/") {
			if a, err := netip.ParseAddr(v); err == nil {
				v = netip.PrefixFrom(a, a.BitLen()).String()
			}
		}
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network such as 10.0.0.0/8", v)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// NeedsTLS reports whether any listener needs the certificate.
func (c Config) NeedsTLS() bool {
	return c.SIP.TLSAddr != "" || c.SIP.WSSAddr != "" || c.HTTP.TLSAddr != ""
}

func quote(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// checkHost accepts a DNS name or an IP address.
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty")
	}
	if net.ParseIP(h) != nil {
		return nil
	}
	if len(h) > 253 {
		return errors.New("longer than 253 characters")
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("not a host name")
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("character %q is not allowed in a host name", r)
			}
		}
	}
	return nil
}

// checkListenAddr accepts host:port with a port from 0 to 65535.
func checkListenAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return errors.New("want HOST:PORT, e.g. 0.0.0.0:5060")
	}
	if host != "" && net.ParseIP(host) == nil {
		if err := checkHost(host); err != nil {
			return fmt.Errorf("host: %v", err)
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// redact hides a password in a database URL.
func redact(dsn string) string {
	scheme := strings.Index(dsn, "://")
	at := strings.LastIndex(dsn, "@")
	if scheme < 0 || at < scheme {
		return dsn
	}
	if i := strings.Index(dsn[scheme+3:at], ":"); i >= 0 {
		return dsn[:scheme+3+i] + ":xxxxx" + dsn[at:]
	}
	return dsn
}
