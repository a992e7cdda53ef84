// Package metrics defines gchd's Prometheus collectors, named
// gchd_<subsystem>_<name>_<unit> with bounded labels, as one struct with
// typed methods. It registers on the registry main creates: no globals.
package metrics

import (
	"context"
	"database/sql"
	"errors"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector of a gchd process.
type Metrics struct {
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec

	dbDuration *prometheus.HistogramVec
	dbErrors   *prometheus.CounterVec

	chatEvents *prometheus.CounterVec
	chatFanout prometheus.Histogram

	sip      sipMetrics
	delivery deliveryMetrics

	limitRejections *prometheus.CounterVec

	quotaRefusals *prometheus.CounterVec

	traceDropped prometheus.Counter

	pushRequests *prometheus.CounterVec
	events       eventStreamMetrics
}

// BuildInfo describes the running binary.
type BuildInfo struct {
	Version string
}

// New creates the collectors and registers them, with the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer, build BuildInfo) *Metrics {
	m := &Metrics{
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_api_requests_total",
			Help: "Group chat API calls by method (gm) and result code.",
		}, []string{"gm", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gchd_api_request_duration_seconds",
			Help:    "Time to answer a group chat API call, by method (gm).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"gm"}),
		dbDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gchd_db_transaction_duration_seconds",
			Help:    "Time of database transactions, by operation.",
			Buckets: []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"op"}),
		dbErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_db_errors_total",
			Help: "Database transactions that failed, by operation.",
		}, []string{"op"}),
		chatEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_chat_events_total",
			Help: "Events committed: messages (MSG), stored direct messages (DIR) and notifications (NG, EG, DG, DM), by source (http, sip) and kind.",
		}, []string{"source", "kind"}),
		chatFanout: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gchd_chat_fanout_recipients",
			Help:    "Recipients of each committed event.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 30, 50, 100},
		}),
	}
	m.sip = newSIPMetrics()
	reg.MustRegister(m.sip.collectors()...)
	m.delivery = newDeliveryMetrics()
	reg.MustRegister(m.delivery.outcomes, m.delivery.latency)
	m.limitRejections = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gchd_limits_rejections_total",
		Help: "Requests, connections and logins refused by an abuse limit, by limit.",
	}, []string{"limit"})
	reg.MustRegister(m.limitRejections)
	m.quotaRefusals = newQuotaRefusals()
	reg.MustRegister(m.quotaRefusals)
	m.traceDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gchd_trace_hep_dropped_total",
		Help: "SIP messages not mirrored to the HEP collector (trace.hep_addr) because its send queue was full.",
	})
	reg.MustRegister(m.traceDropped)
	m.pushRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gchd_push_requests_total",
		Help: "Pushes to wake sleeping phones (RFC 8599), by outcome: sent, retried (an attempt failed and is tried again), failed, rejected (the gateway rejected the pushkey), coalesced (one went to the device within push.coalesce), dropped (queue full).",
	}, []string{"outcome"})
	reg.MustRegister(m.pushRequests)
	m.events = newEventStreamMetrics(reg)
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gchd_build_info",
		Help: "The running gchd build; always 1.",
	}, []string{"version", "goversion"})
	info.WithLabelValues(build.Version, runtime.Version()).Set(1)
	reg.MustRegister(
		m.apiRequests, m.apiDuration, m.dbDuration, m.dbErrors, m.chatEvents, m.chatFanout, info,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// APIRequest counts one API call. gm must be a canonical method name or
// "unknown", so that the label stays bounded.
func (m *Metrics) APIRequest(gm string, code int, d time.Duration) {
	m.apiRequests.WithLabelValues(gm, strconv.Itoa(code)).Inc()
	m.apiDuration.WithLabelValues(gm).Observe(d.Seconds())
}

// DBTransaction records one database transaction. A transaction cut short
// because its caller went away (a client hung up) is not a database error.
func (m *Metrics) DBTransaction(op string, d time.Duration, err error) {
	m.dbDuration.WithLabelValues(op).Observe(d.Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		m.dbErrors.WithLabelValues(op).Inc()
	}
}

// InitDBOperations creates the series of each database operation at zero,
// so that rate() and alerts see them before the first error.
func (m *Metrics) InitDBOperations(ops []string) {
	for _, op := range ops {
		m.dbErrors.WithLabelValues(op)
		m.dbDuration.WithLabelValues(op)
	}
}

// RegisterReady exports whether the server is ready (1) or not (0).
func RegisterReady(reg prometheus.Registerer, ready func() bool) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gchd_server_ready",
		Help: "1 when every listener serves and the database is at the binary's schema, else 0 (as /readyz).",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}

// EventCommitted counts one committed event, by the face it came through,
// and the size of its fan-out.
func (m *Metrics) EventCommitted(source, kind string, recipients int) {
	if source == "" {
		source = "other"
	}
	m.chatEvents.WithLabelValues(source, kind).Inc()
	m.chatFanout.Observe(float64(recipients))
}

// RegisterDBPools exports the statistics of database connection pools, by
// pool name (e.g. "write", "read").
func RegisterDBPools(reg prometheus.Registerer, pools map[string]func() sql.DBStats) {
	reg.MustRegister(&dbPoolCollector{pools: pools})
}

var (
	dbOpenDesc  = prometheus.NewDesc("gchd_db_connections_open", "Open database connections, by pool.", []string{"pool"}, nil)
	dbInUseDesc = prometheus.NewDesc("gchd_db_connections_in_use", "Database connections in use, by pool.", []string{"pool"}, nil)
	dbWaitDesc  = prometheus.NewDesc("gchd_db_connection_waits_total", "Times a connection had to be waited for, by pool.", []string{"pool"}, nil)
	dbWaitDur   = prometheus.NewDesc("gchd_db_connection_wait_seconds_total", "Time spent waiting for connections, by pool.", []string{"pool"}, nil)
)

// dbPoolCollector reads pool statistics at scrape time.
type dbPoolCollector struct {
	pools map[string]func() sql.DBStats
}

func (c *dbPoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dbOpenDesc
	ch <- dbInUseDesc
	ch <- dbWaitDesc
	ch <- dbWaitDur
}

func (c *dbPoolCollector) Collect(ch chan<- prometheus.Metric) {
	for name, stats := range c.pools {
		s := stats()
		ch <- prometheus.MustNewConstMetric(dbOpenDesc, prometheus.GaugeValue, float64(s.OpenConnections), name)
		ch <- prometheus.MustNewConstMetric(dbInUseDesc, prometheus.GaugeValue, float64(s.InUse), name)
		ch <- prometheus.MustNewConstMetric(dbWaitDesc, prometheus.CounterValue, float64(s.WaitCount), name)
		ch <- prometheus.MustNewConstMetric(dbWaitDur, prometheus.CounterValue, s.WaitDuration.Seconds(), name)
	}
}

// deliveryMetrics are the delivery machinery's collectors.
type deliveryMetrics struct {
	outcomes *prometheus.CounterVec
	latency  prometheus.Histogram
}

func newDeliveryMetrics() deliveryMetrics {
	return deliveryMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_delivery_attempts_total",
			Help: "Delivery attempts of events to members, by outcome (delivered, retried, stored, failed, expired, handed_over: another node sends it).",
		}, []string{"outcome"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gchd_delivery_latency_seconds",
			Help:    "Time from an event's commit to its delivery to a member's device.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5, 30, 60, 300, 3600},
		}),
	}
}

// Delivery records n delivery attempts with an outcome; latency counts for
// delivered ones.
func (m *Metrics) Delivery(outcome string, n int, latency time.Duration) {
	m.delivery.outcomes.WithLabelValues(outcome).Add(float64(n))
	if outcome == "delivered" {
		m.delivery.latency.Observe(latency.Seconds())
	}
}

var (
	pendingDesc = prometheus.NewDesc("gchd_delivery_pending", "Deliveries not done, by state: waiting (for a device to register) or retrying (after a failed attempt).", []string{"state"}, nil)
	oldestDesc  = prometheus.NewDesc("gchd_delivery_oldest_pending_age_seconds", "Age of the oldest event with a pending delivery.", nil, nil)
)

// RegisterPendingGauges exports the pending deliveries, read at scrape time.
func RegisterPendingGauges(reg prometheus.Registerer, pending func() (waiting, retrying int, oldest time.Duration, err error)) {
	reg.MustRegister(&pendingCollector{pending: pending})
}

type pendingCollector struct {
	pending func() (int, int, time.Duration, error)
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestDesc
}

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	waiting, retrying, age, err := c.pending()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(pendingDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(waiting), "waiting")
	ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(retrying), "retrying")
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age.Seconds())
}

// TraceDropped counts a SIP message the HEP mirror had no room for.
func (m *Metrics) TraceDropped() { m.traceDropped.Inc() }

// LimitRejected counts something refused by an abuse limit (sip_rate,
// http_rate, auth_source, auth_account, connections).
func (m *Metrics) LimitRejected(limit string) {
	m.limitRejections.WithLabelValues(limit).Inc()
}

// Push counts a push by its outcome.
func (m *Metrics) Push(outcome string) { m.pushRequests.WithLabelValues(outcome).Inc() }

// InitPushOutcomes creates the series of each push outcome at zero, so
// that rate() and alerts see them before the first push.
func (m *Metrics) InitPushOutcomes(outcomes []string) {
	for _, o := range outcomes {
		m.pushRequests.WithLabelValues(o)
	}
}
