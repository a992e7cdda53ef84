package metrics

import "github.com/prometheus/client_golang/prometheus"

// eventStreamMetrics watch the live event streams (GET /gch/events).
type eventStreamMetrics struct {
	open    prometheus.Gauge
	dropped *prometheus.CounterVec
}

// Reasons a stream was dropped, for EventStreamDropped.
const (
	DropBacklog      = "backlog"       // more events waited than a stream may hold
	DropWriteTimeout = "write_timeout" // a write did not finish within http.events_write_timeout
)

func newEventStreamMetrics(reg prometheus.Registerer) eventStreamMetrics {
	m := eventStreamMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gchd_http_event_streams",
			Help: "Live event streams (GET /gch/events) open now.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gchd_http_event_streams_dropped_total",
			Help: "Event streams ended because their reader was too slow, by reason (backlog, write_timeout).",
		}, []string{"reason"}),
	}
	for _, r := range []string{DropBacklog, DropWriteTimeout} {
		m.dropped.WithLabelValues(r)
	}
	reg.MustRegister(m.open, m.dropped)
	return m
}

// EventStreamOpened counts a stream that opened.
func (m *Metrics) EventStreamOpened() { m.events.open.Inc() }

// EventStreamClosed counts a stream that ended.
func (m *Metrics) EventStreamClosed() { m.events.open.Dec() }

// EventStreamDropped counts a stream ended for a slow reader (DropBacklog,
// DropWriteTimeout).
func (m *Metrics) EventStreamDropped(reason string) { m.events.dropped.WithLabelValues(reason).Inc() }
