package metrics

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// sipMetrics are the SIP side's collectors.
type sipMetrics struct {
	requestsReceived  *prometheus.CounterVec
	responsesSent     *prometheus.CounterVec
	requestsSent      *prometheus.CounterVec
	responsesReceived *prometheus.CounterVec
	txDuration        *prometheus.HistogramVec
	authFailures      *prometheus.CounterVec
	registrations     *prometheus.CounterVec
	requestsDropped   *prometheus.CounterVec
	relayed           *prometheus.CounterVec
}

func newSIPMetrics() sipMetrics {
	return sipMetrics{
		requestsReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_requests_received_total",
			Help: "SIP requests received, by method.",
		}, []string{"method"}),
		responsesSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_responses_sent_total",
			Help: "Final SIP responses sent to received requests, by method and class (2xx, 4xx...).",
		}, []string{"method", "class"}),
		requestsSent: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_requests_sent_total",
			Help: "SIP requests sent (relayed or originated), by method.",
		}, []string{"method"}),
		responsesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_responses_received_total",
			Help: "Final SIP responses received to sent requests, by method and class; class timeout for none.",
		}, []string{"method", "class"}),
		txDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gchd_sip_transaction_duration_seconds",
			Help:    "Time from a request to its final response, by direction (in: received, out: sent) and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 32},
		}, []string{"direction", "method"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_auth_failures_total",
			Help: "Digest authentications that failed, by reason (missing, stale, nonce, replay, realm, credentials, user_mismatch).",
		}, []string{"reason"}),
		registrations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_registrar_registrations_total",
			Help: "REGISTER requests by result (registered, refreshed, unregistered, queried, challenged, forbidden, invalid, error).",
		}, []string{"result"}),
		requestsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_requests_dropped_total",
			Help: "SIP requests dropped unanswered, by method and reason (overload: the REGISTER queue was full; the phone retransmits).",
		}, []string{"method", "reason"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_sip_relayed_total",
			Help: "Requests between gchd nodes, by method and direction (out: handed to the node holding the flow; in: sent down a flow for another node).",
		}, []string{"method", "direction"}),
	}
}

func (s sipMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.requestsReceived, s.responsesSent, s.requestsSent, s.responsesReceived,
		s.txDuration, s.authFailures, s.registrations, s.requestsDropped, s.relayed}
}

// sipMethods bounds the method label.
var sipMethods = map[string]bool{
	"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "REGISTER": true, "OPTIONS": true,
	"MESSAGE": true, "INFO": true, "PRACK": true, "UPDATE": true, "SUBSCRIBE": true, "NOTIFY": true,
	"REFER": true, "PUBLISH": true,
}

func methodLabel(m string) string {
	if sipMethods[m] {
		return m
	}
	return "OTHER"
}

func classLabel(code int) string {
	if code <= 0 {
		return "timeout"
	}
	return strconv.Itoa(code/100) + "xx"
}

// SIPRequestReceived counts a received request.
func (m *Metrics) SIPRequestReceived(method string) {
	m.sip.requestsReceived.WithLabelValues(methodLabel(method)).Inc()
}

// SIPResponseSent counts the final response to a received request and the
// time it took.
func (m *Metrics) SIPResponseSent(method string, code int, d time.Duration) {
	method = methodLabel(method)
	m.sip.responsesSent.WithLabelValues(method, classLabel(code)).Inc()
	m.sip.txDuration.WithLabelValues("in", method).Observe(d.Seconds())
}

// SIPRequestDropped counts a request dropped unanswered.
func (m *Metrics) SIPRequestDropped(method, reason string) {
	m.sip.requestsDropped.WithLabelValues(methodLabel(method), reason).Inc()
}

// SIPRequestSent counts a request gchd sent.
func (m *Metrics) SIPRequestSent(method string) {
	m.sip.requestsSent.WithLabelValues(methodLabel(method)).Inc()
}

// SIPResponseReceived counts the final response to a sent request (code 0:
// none came) and the time it took.
func (m *Metrics) SIPResponseReceived(method string, code int, d time.Duration) {
	method = methodLabel(method)
	m.sip.responsesReceived.WithLabelValues(method, classLabel(code)).Inc()
	m.sip.txDuration.WithLabelValues("out", method).Observe(d.Seconds())
}

// AuthFailure is why a digest authentication failed: the reason label of
// gchd_sip_auth_failures_total, which dashboards and alerts select on.
type AuthFailure string

const (
	AuthMissing     AuthFailure = "missing"   // no Authorization: the first request of a phone
	AuthMalformed   AuthFailure = "malformed" // one that cannot be parsed
	AuthRealm       AuthFailure = "realm"     // the phone answers another domain's challenge
	AuthAlgorithm   AuthFailure = "algorithm" // a digest algorithm not offered
	AuthNonce       AuthFailure = "nonce"     // a nonce not signed here
	AuthQOP         AuthFailure = "qop"       // a qop other than auth
	AuthCredentials AuthFailure = "credentials"
	AuthStale       AuthFailure = "stale"  // an expired nonce
	AuthReplay      AuthFailure = "replay" // a nonce-count used already
	// AuthUserMismatch: the credentials are good, for another user than
	// the request is from (From, or the REGISTER's To).
	AuthUserMismatch AuthFailure = "user_mismatch"
	// AuthNodeSignature: a request names another gchd node as its
	// sender, with a signature the nodes' secret did not make.
	AuthNodeSignature AuthFailure = "node_signature"
)

// SIPRelayed counts a request between nodes: out, handed to the node that
// holds the target's flow; in, sent down a flow for another node.
func (m *Metrics) SIPRelayed(method, direction string) {
	m.sip.relayed.WithLabelValues(methodLabel(method), direction).Inc()
}

// SIPAuthFailure counts a failed digest authentication.
func (m *Metrics) SIPAuthFailure(reason AuthFailure) {
	m.sip.authFailures.WithLabelValues(string(reason)).Inc()
}

// RegistrationResult is what became of a REGISTER: the result label of
// gchd_registrar_registrations_total, which dashboards and alerts select on.
type RegistrationResult string

const (
	RegistrationRegistered   RegistrationResult = "registered"   // a binding added or changed
	RegistrationRefreshed    RegistrationResult = "refreshed"    // bindings renewed, none changed
	RegistrationUnregistered RegistrationResult = "unregistered" // no binding left
	RegistrationQueried      RegistrationResult = "queried"      // no Contact: a list of the bindings
	// RegistrationChallenged: answered 401, also for a wrong password,
	// which gets a new challenge.
	RegistrationChallenged RegistrationResult = "challenged"
	RegistrationForbidden  RegistrationResult = "forbidden"
	RegistrationInvalid    RegistrationResult = "invalid"
	RegistrationError      RegistrationResult = "error"
)

// Registration counts a REGISTER by result.
func (m *Metrics) Registration(result RegistrationResult) {
	m.sip.registrations.WithLabelValues(string(result)).Inc()
}

// RegisterContactGauges exports the registered contacts by transport and
// the users online, read at scrape time.
func RegisterContactGauges(reg prometheus.Registerer, stats func() (byTransport map[string]int, users int)) {
	reg.MustRegister(&contactCollector{stats: stats})
}

var (
	contactsDesc = prometheus.NewDesc("gchd_registrar_contacts", "Reachable registered contacts, by transport.", []string{"transport"}, nil)
	usersDesc    = prometheus.NewDesc("gchd_registrar_users_online", "Users with at least one reachable registered contact.", nil, nil)
)

type contactCollector struct {
	stats func() (map[string]int, int)
}

func (c *contactCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- contactsDesc
	ch <- usersDesc
}

func (c *contactCollector) Collect(ch chan<- prometheus.Metric) {
	by, users := c.stats()
	for _, t := range []string{"UDP", "TCP", "TLS", "WS", "WSS"} {
		ch <- prometheus.MustNewConstMetric(contactsDesc, prometheus.GaugeValue, float64(by[t]), t)
	}
	ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, float64(users))
}
