package configs

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
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
	if c.HTTP.MaxBodyBytes < 1024 {
		bad("http.max_body_bytes", c.HTTP.MaxBodyBytes, "must be at least 1024")
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
