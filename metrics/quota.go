package metrics

import "github.com/prometheus/client_golang/prometheus"

// Quota labels, one per quota of the chat engine.
var quotaNames = []string{"pending", "groups"}

func newQuotaRefusals() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gchd_chat_quota_refusals_total",
		Help: "Operations refused by an account quota: pending (chat.max_pending_per_sender: invitations, group deletions and stored direct messages waiting for one recipient) and groups (chat.max_groups_per_hour).",
	}, []string{"quota"})
	for _, q := range quotaNames {
		c.WithLabelValues(q) // at zero, so that alerts see the series before the first refusal
	}
	return c
}

// QuotaRefused counts an operation refused by the named chat quota
// (pending or groups).
func (m *Metrics) QuotaRefused(quota string) {
	m.quotaRefusals.WithLabelValues(quota).Inc()
}
