package configs

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func load(t *testing.T, args []string, env map[string]string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := Register(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return Load(f, envOf(env))
}

func writeFile(t *testing.T, body string) string {
	p := filepath.Join(t.TempDir(), "gchd.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsAreValid(t *testing.T) {
	cfg, err := load(t, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Fatalf("nothing set: %+v, want defaults", cfg)
	}
	// The operator interface of DESIGN.md section 8.
	if cfg.Domain != "localhost" || cfg.SIP.Addr != "0.0.0.0:5060" || cfg.HTTP.Addr != "0.0.0.0:8080" ||
		cfg.Database != "sqlite:./data/gchd.db" || cfg.SIP.WSAddr != "" || cfg.SIP.TLSAddr != "" {
		t.Fatalf("defaults = %+v", cfg)
	}
}

func TestNamesOfTheOperatorInterface(t *testing.T) {
	want := map[string][2]string{ // path -> flag, env
		"domain":       {"domain", "GCHD_DOMAIN"},
		"sip.addr":     {"sip-addr", "GCHD_SIP_ADDR"},
		"sip.ws_addr":  {"sip-ws-addr", "GCHD_SIP_WS_ADDR"},
		"sip.tls_addr": {"sip-tls-addr", "GCHD_SIP_TLS_ADDR"},
		"tls.cert":     {"tls-cert", "GCHD_TLS_CERT"},
		"tls.key":      {"tls-key", "GCHD_TLS_KEY"},
		"http.addr":    {"http-addr", "GCHD_HTTP_ADDR"},
		"database":     {"database", "GCHD_DATABASE"},
	}
	got := map[string][2]string{}
	for _, s := range Settings() {
		got[s.Path] = [2]string{s.Flag, s.Env}
	}
	for path, names := range want {
		if got[path] != names {
			t.Errorf("%s: flag/env = %v, want %v", path, got[path], names)
		}
	}
}

func TestPrecedence(t *testing.T) {
	file := writeFile(t, "domain: file.example\nhttp:\n  addr: 127.0.0.1:1\nsip:\n  addr: 127.0.0.1:2\nchat:\n  max_participants: 10\n")
	cfg, err := load(t, []string{"-config", file, "-domain", "flag.example"}, map[string]string{
		"GCHD_DOMAIN":    "env.example",
		"GCHD_HTTP_ADDR": "127.0.0.1:3",
	})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Domain != "flag.example" {
		t.Errorf("domain = %q: flag must win over env and file", cfg.Domain)
	}
	if cfg.HTTP.Addr != "127.0.0.1:3" {
		t.Errorf("http.addr = %q: env must win over file", cfg.HTTP.Addr)
	}
	if cfg.SIP.Addr != "127.0.0.1:2" || cfg.Chat.MaxParticipants != 10 {
		t.Errorf("file values lost: %+v", cfg)
	}
	if cfg.Log.Level != "info" {
		t.Errorf("default lost: %+v", cfg.Log)
	}
	// GCHD_CONFIG names the file when -config does not.
	cfg, err = load(t, nil, map[string]string{"GCHD_CONFIG": file})
	if err != nil || cfg.Domain != "file.example" {
		t.Fatalf("GCHD_CONFIG: %+v, %v", cfg.Domain, err)
	}
}

func TestTypedValues(t *testing.T) {
	cfg, err := load(t, []string{"-api-codes-in-status=false", "-shutdown-grace", "3s"}, map[string]string{"GCHD_CHAT_MAX_PARTICIPANTS": "12"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.API.CodesInStatus || cfg.Shutdown.Grace != 3*time.Second || cfg.Chat.MaxParticipants != 12 {
		t.Fatalf("cfg = %+v", cfg)
	}
}

func TestBadValuesNameTheSetting(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		file  string
		wants []string
	}{
		{"flag port", []string{"-sip-addr", "0.0.0.0:99999"}, nil, "", []string{"sip.addr", "-sip-addr", "GCHD_SIP_ADDR", "port"}},
		{"env integer", nil, map[string]string{"GCHD_CHAT_MAX_PARTICIPANTS": "many"}, "", []string{"GCHD_CHAT_MAX_PARTICIPANTS", "chat.max_participants", "not an integer"}},
		{"database", []string{"-database", "mysql://x"}, nil, "", []string{"database", "sqlite:PATH"}},
		{"password not echoed", []string{"-database", "mysql://u:hunter2@x"}, nil, "", []string{"xxxxx"}},
		{"domain", []string{"-domain", "bad domain"}, nil, "", []string{"domain", "not allowed"}},
		{"log level", nil, map[string]string{"GCHD_LOG_LEVEL": "loud"}, "", []string{"log.level", "debug, info"}},
		{"tls without cert", []string{"-sip-tls-addr", "127.0.0.1:5061"}, nil, "", []string{"tls.cert", "no certificate"}},
		{"unreadable cert", []string{"-http-tls-addr", "127.0.0.1:8443", "-tls-cert", "/nonexistent.pem", "-tls-key", "/nonexistent.key"}, nil, "", []string{"tls.cert", "cannot load"}},
		{"unknown file key", nil, nil, "sip:\n  adr: 1\n", []string{"adr", "not found"}},
		{"file type", nil, nil, "chat:\n  max_participants: lots\n", []string{"max_participants"}},
		{"duration", []string{"-shutdown-grace", "soon"}, nil, "", []string{"shutdown.grace", "duration"}},
		{"no listeners", []string{"-sip-addr", "", "-http-addr", ""}, nil, "", []string{"no SIP listener", "no HTTP listener"}},
		{"transaction linger", []string{"-sip-transaction-linger", "100ms"}, nil, "", []string{"sip.transaction_linger", "between 1s and 1m"}},
		{"refresh write", []string{"-registrar-refresh-write", "31s"}, nil, "", []string{"registrar.refresh_write", "half of registrar.min_expires"}},
		{"trusted proxies", nil, map[string]string{"GCHD_HTTP_TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"}, "", []string{"http.trusted_proxies", "proxy.example", "not a network"}},
		{"push gateway", []string{"-push-gateway-url", "push.example:8080/notify"}, nil, "", []string{"push.gateway_url", "-push-gateway-url", "http or https URL"}},
		{"push gateway password not echoed", []string{"-push-gateway-url", "ftp://u:hunter2@push.example/notify"}, nil, "", []string{"push.gateway_url", "xxxxx"}},
		{"push coalesce", nil, map[string]string{"GCHD_PUSH_COALESCE": "10ms"}, "", []string{"push.coalesce", "between 1s and 1h"}},
		{"push answer wait", []string{"-push-answer-wait", "1m", "-delivery-attempt-timeout", "30s"}, nil, "", []string{"push.answer_wait", "shorter than delivery.attempt_timeout"}},
		{"push timeout", nil, nil, "push:\n  timeout: 0s\n", []string{"push.timeout"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.args
			if tt.file != "" {
				args = append([]string{"-config", writeFile(t, tt.file)}, args...)
			}
			_, err := load(t, args, tt.env)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks a password: %v", err)
			}
		})
	}
}

// The example file documents every setting with its default value.
func TestExampleFile(t *testing.T) {
	data, err := os.ReadFile("gchd.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := load(t, []string{"-config", "gchd.example.yaml"}, nil)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("example values differ from the defaults:\n%+v\n%+v", cfg, Default())
	}
	for _, s := range Settings() {
		key := s.Path[strings.LastIndex(s.Path, ".")+1:] + ":"
		if !strings.Contains(string(data), key) {
			t.Errorf("example lacks %s", s.Path)
		}
	}
}

// connections_per_source counted SIP and HTTP connections together; it was
// split, and a configuration that still sets it is refused by name
// wherever it is set, rather than failing as an unknown key or, in the
// environment, being ignored.
func TestRemovedConnectionsPerSourceIsRefused(t *testing.T) {
	want := "limits.connections_per_source is no longer a setting: set limits.sip_connections_per_source and limits.http_connections_per_source"
	file := writeFile(t, "limits:\n  connections_per_source: 10\n")
	if _, err := load(t, []string{"-config", file}, nil); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("file: %v", err)
	}
	if _, err := load(t, nil, map[string]string{"GCHD_LIMITS_CONNECTIONS_PER_SOURCE": "10"}); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("environment: %v", err)
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	Register(fs)
	if err := fs.Parse([]string{"-limits-connections-per-source", "10"}); err == nil || !strings.Contains(err.Error(), "limits.connections_per_source is no longer a setting") {
		t.Fatalf("flag: %v", err)
	}
	cfg, err := load(t, []string{"-config", writeFile(t, "limits:\n  sip_connections_per_source: 7\n  http_connections_per_source: 9\n")}, nil)
	if err != nil || cfg.Limits.SIPConnectionsPerSource != 7 || cfg.Limits.HTTPConnectionsPerSource != 9 {
		t.Fatalf("split keys: %+v, %v", cfg.Limits, err)
	}
}
