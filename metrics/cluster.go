package metrics

import "github.com/prometheus/client_golang/prometheus"

// RenewalOutcomes are the outcomes of a node's lease renewal, each a
// series of gchd_cluster_lease_renewals_total from the start.
var RenewalOutcomes = []string{"renewed", "failed", "lapsed", "displaced"}

// RegisterCluster exports this node's view of the cluster: the live nodes
// it sees, whether it is fenced, and its renewals. It returns the function
// that counts a renewal's outcome.
func RegisterCluster(reg prometheus.Registerer, live func() int, fenced func() bool) (renewal func(outcome string)) {
	renewals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gchd_cluster_lease_renewals_total",
		Help: "Renewals of this node's lease, by outcome (renewed; failed: the database did not answer; lapsed: it had run out and the node rejoined under a new epoch; displaced: another process took the name).",
	}, []string{"outcome"})
	for _, o := range RenewalOutcomes {
		renewals.WithLabelValues(o)
	}
	reg.MustRegister(renewals,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gchd_cluster_nodes",
			Help: "Nodes whose lease runs, this one included, as this node last read them.",
		}, func() float64 { return float64(live()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "gchd_cluster_fenced",
			Help: "1 while this node has not renewed its lease in time: it delivers nothing and answers REGISTER 503.",
		}, func() float64 {
			if fenced() {
				return 1
			}
			return 0
		}))
	return func(outcome string) { renewals.WithLabelValues(outcome).Inc() }
}
