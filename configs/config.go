// Package configs is gchd's one configuration: defaults, an optional YAML
// file, GCHD_* environment variables and command-line flags, in rising
// precedence, validated with errors that name the setting.
//
// Every setting has a YAML path (sip.ws_addr); its environment variable is
// GCHD_ plus the path in upper case with dots as underscores
// (GCHD_SIP_WS_ADDR) and its flag is the path with dots and underscores as
// dashes (-sip-ws-addr).
package configs

import (
	"time"
)

// Config is the whole configuration of a gchd process.
type Config struct {
	Domain    string    `yaml:"domain" help:"SIP domain of the users' addresses and digest realm"`
	Database  string    `yaml:"database" help:"sqlite:PATH or postgres://USER@HOST/DB?sslmode=disable"`
	SIP       SIP       `yaml:"sip"`
	HTTP      HTTP      `yaml:"http"`
	Registrar Registrar `yaml:"registrar"`
	TLS       TLS       `yaml:"tls"`
	Storage   Storage   `yaml:"storage"`
	API       API       `yaml:"api"`
	Chat      Chat      `yaml:"chat"`
	Delivery  Delivery  `yaml:"delivery"`
	Push      Push      `yaml:"push"`
	Cluster   Cluster   `yaml:"cluster"`
	Limits    Limits    `yaml:"limits"`
	Log       Log       `yaml:"log"`
	Shutdown  Shutdown  `yaml:"shutdown"`
	Debug     Debug     `yaml:"debug"`
	Trace     Trace     `yaml:"trace"`
}

// Trace mirrors SIP traffic to a capture server.
type Trace struct {
	HEPAddr    string `yaml:"hep_addr" help:"host:port of a HEPv3 collector (Homer) that gets a copy of every SIP message over UDP (empty: off)"`
	HEPAgentID int64  `yaml:"hep_agent_id" help:"capture agent id put in each HEP packet, to tell nodes apart in Homer"`
}

// Debug is diagnostics for operators.
type Debug struct {
	PprofAddr string `yaml:"pprof_addr" help:"listen address of Go's /debug/pprof profiler (empty: off; keep it on localhost)"`
}

// SIP is the SIP listeners and behaviour.
type SIP struct {
	Addr             string        `yaml:"addr" help:"SIP UDP and TCP listen address"`
	WSAddr           string        `yaml:"ws_addr" help:"SIP over WebSocket listen address (empty: off)"`
	TLSAddr          string        `yaml:"tls_addr" help:"SIP over TLS listen address (empty: off; needs tls.cert and tls.key)"`
	WSSAddr          string        `yaml:"wss_addr" help:"SIP over secure WebSocket listen address (empty: off; needs tls.cert and tls.key)"`
	Advertise        string        `yaml:"advertise" help:"host put in Via and Record-Route (empty: the listen IP, or the domain when listening on all addresses)"`
	Aliases          string        `yaml:"aliases" help:"comma-separated other host names or IPs that address this server"`
	UDPReadBuffer    int           `yaml:"udp_read_buffer" help:"UDP socket receive buffer in bytes (bursts overflow the kernel default)"`
	DigestAlgorithms string        `yaml:"digest_algorithms" help:"digest challenges offered, most preferred first: MD5 (the default, which every phone answers), SHA-256 or both comma-separated"`
	NonceLifetime    time.Duration `yaml:"nonce_lifetime" help:"how long a digest nonce is accepted before stale=true"`
	Trusted          string        `yaml:"trusted" help:"comma-separated networks (CIDR) whose requests are relayed without a challenge, e.g. an SBC"`
	InviteTimeout    time.Duration `yaml:"invite_timeout" help:"how long an unanswered INVITE rings before it is cancelled (Timer C)"`
	IdleTimeout      time.Duration `yaml:"idle_timeout" help:"close TCP, TLS and WebSocket connections silent for this long"`
	// TransactionLinger is RFC 3261's Timer J: how long the answer to a
	// request over UDP is kept to answer retransmissions of the request.
	TransactionLinger time.Duration `yaml:"transaction_linger" help:"how long the answer to a UDP request is kept for its retransmissions (0: RFC 3261 Timer J, 64*T1 = 32s)"`
}

// Registrar is the registration policy.
type Registrar struct {
	MinExpires     time.Duration `yaml:"min_expires" help:"shortest registration accepted (shorter: 423 Interval Too Brief)"`
	MaxExpires     time.Duration `yaml:"max_expires" help:"longest registration granted (longer ones are shortened)"`
	DefaultExpires time.Duration `yaml:"default_expires" help:"registration length when the phone asks for none"`
	MaxContacts    int           `yaml:"max_contacts" help:"registered contacts per user"`
	Overflow       string        `yaml:"overflow" help:"when a user has max_contacts already: replace (the oldest gives way) or reject (403)"`
	Node           string        `yaml:"node" help:"this node's name among gchd nodes sharing a database (empty: the host name)"`
	RefreshWrite   time.Duration `yaml:"refresh_write" help:"a refresh that only moves a binding's expiry is written within this (once, however often it came meanwhile); 0: each refresh is written"`
}

// HTTP is the API listeners.
type HTTP struct {
	Addr         string `yaml:"addr" help:"HTTP listen address of the API, health and metrics (empty: off)"`
	TLSAddr      string `yaml:"tls_addr" help:"HTTPS listen address (empty: off; needs tls.cert and tls.key)"`
	MaxBodyBytes int64  `yaml:"max_body_bytes" help:"largest request body of an API call, and the fields of an upload besides its file"`
	// TrustedProxies are reverse proxies (CIDR, comma-separated) whose
	// X-Forwarded-For names the client: the rate limit and the login
	// bans then apply to the client, not to the proxy.
	TrustedProxies string `yaml:"trusted_proxies" help:"comma-separated networks (CIDR) of reverse proxies whose X-Forwarded-For names the client"`
	// Live event streams (GET /gch/events) each hold a connection and a
	// goroutine for as long as the client listens.
	EventsPerAccount   int           `yaml:"events_per_account" help:"live event streams (GET /gch/events) one account may have open at once; beyond: 429 (0: no bound)"`
	EventsPerSource    int           `yaml:"events_per_source" help:"live event streams open at once per source address; beyond: 429 (0: no bound)"`
	EventsKeepalive    time.Duration `yaml:"events_keepalive" help:"how long an event stream stays silent before a keep-alive comment is sent"`
	EventsWriteTimeout time.Duration `yaml:"events_write_timeout" help:"how long one write to an event stream may take before its slow reader is dropped"`
}

// TLS is the certificate shared by SIP over TLS/WSS and HTTPS.
type TLS struct {
	Cert string `yaml:"cert" help:"PEM certificate chain file for TLS listeners"`
	Key  string `yaml:"key" help:"PEM private key file for TLS listeners"`
}

// Storage tunes the database connections.
type Storage struct {
	MaxOpenConns      int    `yaml:"max_open_conns" help:"connection pool size (0: engine default)"`
	SQLiteSynchronous string `yaml:"sqlite_synchronous" help:"SQLite synchronous pragma: FULL (durable across power loss) or NORMAL"`
}

// API is the behaviour of /gch.ashx.
type API struct {
	CodesInStatus bool `yaml:"codes_in_status" help:"answer result codes as the HTTP status too (false: HTTP 200 with the code in the body)"`
}

// Chat is the group chat limits.
type Chat struct {
	MaxParticipants int `yaml:"max_participants" help:"participants per group, the owner included"`
	MaxMessageBytes int `yaml:"max_message_bytes" help:"largest message text in bytes"`
	MaxAvatarBytes  int `yaml:"max_avatar_bytes" help:"largest avatar or video thumbnail in bytes"`
	MaxVideoBytes   int `yaml:"max_video_bytes" help:"largest group video in bytes"`
	// Quotas bound what one account can leave for others: counted in the
	// database, so they hold across restarts and nodes.
	MaxPendingPerSender int           `yaml:"max_pending_per_sender" help:"invitations (NG), group deletions (DG) and stored direct messages from one account waiting undelivered for one recipient; beyond: API 429, SIP 486 (0: off)"`
	MaxGroupsPerHour    int           `yaml:"max_groups_per_hour" help:"groups one account may create within any hour; beyond: API 429 (0: off)"`
	PurgeInterval       time.Duration `yaml:"purge_interval" help:"how often the last traces of deleted groups (their DG notifications, once delivered or expired) are removed"`
	MaxImagePixels      int           `yaml:"max_image_pixels" help:"largest avatar or video thumbnail in pixels (width × height), checked before the image is decoded"`
	// MaxUploads bounds the memory uploads take: each holds its file and
	// a decode of at most max_image_pixels.
	MaxUploads int           `yaml:"max_concurrent_uploads" help:"uploads received, checked and stored at once"`
	UploadWait time.Duration `yaml:"upload_wait" help:"how long an upload waits for a free slot before it is answered 503 with Retry-After"`
}

// Delivery is how events reach members' devices.
type Delivery struct {
	Workers        int           `yaml:"workers" help:"deliveries in flight at once (each is one SIP transaction to a member's devices)"`
	Window         int           `yaml:"window" help:"deliveries in flight to one member: 1 keeps strict order even across retries; more lets a busy member take several per round trip"`
	AttemptTimeout time.Duration `yaml:"attempt_timeout" help:"how long one delivery attempt may take"`
	RetryMin       time.Duration `yaml:"retry_min" help:"first wait before a failed delivery is tried again (doubling up to retry_max)"`
	RetryMax       time.Duration `yaml:"retry_max" help:"longest wait between attempts"`
	Retention      time.Duration `yaml:"retention" help:"how long an undelivered event keeps waiting for a member before it expires"`
	// CopyToSender is for clients that keep their history in step across
	// a user's devices; a plain phone would show her own text as someone
	// else's.
	CopyToSender bool `yaml:"copy_to_sender" help:"send a copy of a member's own group message, marked X-GC-Copy: sent, to her other devices registered at the time (never stored or retried)"`
}

// Push wakes sleeping phones (RFC 8599): a phone app that its system
// suspended registers with the address its push service knows it by, and
// gchd asks the operator's push gateway to wake it.
type Push struct {
	GatewayURL  string        `yaml:"gateway_url" help:"http or https URL of the push gateway a push request (JSON POST) goes to, to wake a phone registered with push parameters (RFC 8599) that does not answer (empty: off)"`
	Coalesce    time.Duration `yaml:"coalesce" help:"least time between two pushes to one device: a burst of messages for a sleeping phone wakes it once"`
	IncludeText bool          `yaml:"include_text" help:"put the start of a message's text (256 characters) in its push; off, a push names the conversation, the sender and the MID only (lock screens are public)"`
	Timeout     time.Duration `yaml:"timeout" help:"how long one push request may take; 5xx, 408, 429 and timeouts are tried again after 0.5s, 1s and 2s"`
	AnswerWait  time.Duration `yaml:"answer_wait" help:"how long a delivery to a device with push parameters waits for its answer before the device counts as asleep and is sent a push"`
}

// Cluster is this node's membership among the nodes sharing a PostgreSQL
// database (docs/cluster.md). The node's name is registrar.node.
type Cluster struct {
	Lease time.Duration `yaml:"lease" help:"how long a node's lease holds after its last renewal: a node silent that long is gone for the others, and fences itself (no deliveries, REGISTER 503) shortly before"`
	Renew time.Duration `yaml:"renew" help:"how often a node renews its lease (less than cluster.lease)"`
}

// Limits protect the server from abuse. Each is per source address and
// counted in gchd_limits_rejections_total; 0 turns a limit off. Sources in
// sip.trusted are not limited. SIGHUP applies new values.
type Limits struct {
	SIPRate         float64       `yaml:"sip_rate" help:"SIP messages per second per source address (0: off)"`
	SIPBurst        int           `yaml:"sip_burst" help:"SIP messages a source may send at once above sip_rate"`
	HTTPRate        float64       `yaml:"http_rate" help:"API requests per second per source address (0: off)"`
	HTTPBurst       int           `yaml:"http_burst" help:"API requests a source may send at once above http_rate"`
	AuthFailures    int           `yaml:"auth_failures" help:"failed logins (SIP digest or HTTP basic) from one address within auth_window that ban it (0: off)"`
	AuthWindow      time.Duration `yaml:"auth_window" help:"window in which failed logins are counted"`
	AuthBan         time.Duration `yaml:"auth_ban" help:"how long an address (or account) is refused after too many failed logins"`
	AccountFailures int           `yaml:"account_failures" help:"failed logins to one account, from anywhere, within auth_window that lock it for auth_ban for the addresses that failed recently (0: off)"`
	// Separate caps, so that idle SIP connections do not lock a source
	// out of the API nor API clients out of SIP (connections_per_source,
	// which counted both together, is refused with a pointer to these).
	SIPConnectionsPerSource  int `yaml:"sip_connections_per_source" help:"concurrent SIP TCP, TLS and WebSocket connections per source address (0: off)"`
	HTTPConnectionsPerSource int `yaml:"http_connections_per_source" help:"concurrent HTTP and HTTPS connections per source address (0: off)"`
}

// Log is the logging.
type Log struct {
	Level  string `yaml:"level" help:"debug, info, warn or error"`
	Format string `yaml:"format" help:"text or json"`
}

// Shutdown is the graceful stop.
type Shutdown struct {
	Grace time.Duration `yaml:"grace" help:"how long a stop waits for in-flight work"`
}

// Default returns the configuration gchd runs with when nothing is set.
func Default() Config {
	return Config{
		Domain:   "localhost",
		Database: "sqlite:./data/gchd.db",
		SIP: SIP{
			Addr:             "0.0.0.0:5060",
			UDPReadBuffer:    4 << 20,
			DigestAlgorithms: "MD5",
			NonceLifetime:    5 * time.Minute,
			InviteTimeout:    3 * time.Minute,
			IdleTimeout:      10 * time.Minute,
		},
		Registrar: Registrar{
			MinExpires:     time.Minute,
			MaxExpires:     2 * time.Hour,
			DefaultExpires: time.Hour,
			MaxContacts:    10,
			Overflow:       "replace",
			RefreshWrite:   5 * time.Second,
		},
		HTTP: HTTP{Addr: "0.0.0.0:8080", MaxBodyBytes: 160 << 10,
			EventsPerAccount: 8, EventsPerSource: 32, EventsKeepalive: 15 * time.Second, EventsWriteTimeout: 10 * time.Second},
		Storage: Storage{SQLiteSynchronous: "FULL"},
		API:     API{CodesInStatus: true},
		Chat: Chat{
			MaxParticipants: 30,
			MaxMessageBytes: 16 << 10,
			MaxAvatarBytes:  100 << 10,
			MaxVideoBytes:   16 << 20,

			MaxPendingPerSender: 100,
			MaxGroupsPerHour:    60,
			PurgeInterval:       time.Minute,
			MaxImagePixels:      4 << 20,
			MaxUploads:          4,
			UploadWait:          time.Second,
		},
		Delivery: Delivery{
			Workers:        256,
			Window:         1,
			AttemptTimeout: 40 * time.Second,
			RetryMin:       2 * time.Second,
			RetryMax:       5 * time.Minute,
			Retention:      7 * 24 * time.Hour,
		},
		Push:    Push{Coalesce: 5 * time.Second, Timeout: 5 * time.Second, AnswerWait: time.Second},
		Cluster: Cluster{Lease: 4 * time.Second, Renew: time.Second},
		Limits: Limits{
			SIPRate:                  200,
			SIPBurst:                 400,
			HTTPRate:                 100,
			HTTPBurst:                200,
			AuthFailures:             20,
			AuthWindow:               time.Minute,
			AuthBan:                  5 * time.Minute,
			AccountFailures:          50,
			SIPConnectionsPerSource:  100,
			HTTPConnectionsPerSource: 100,
		},
		Log:      Log{Level: "info", Format: "text"},
		Shutdown: Shutdown{Grace: 10 * time.Second},
		Trace:    Trace{HEPAgentID: 1},
	}
}
