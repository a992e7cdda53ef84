package app

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
)

// value sums the samples of a metric whose labels include want.
func value(t *testing.T, s *server, name string, want map[string]string) float64 {
	t.Helper()
	families, err := s.app.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, want) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

// Every metric is named gchd_<subsystem>_<name>_<unit> (or is Go's and the
// process's), passes Prometheus' own linter, and moves when something
// happens.
func TestMetrics(t *testing.T) {
	s := startSIP(t)
	problems, err := testutil.GatherAndLint(s.app.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	families, _ := s.app.Registry().Gather()
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "gchd_") && !strings.HasPrefix(name, "go_") && !strings.HasPrefix(name, "process_") && !strings.HasPrefix(name, "promhttp_") {
			t.Errorf("metric %s is not gchd_<subsystem>_<name>", name)
		}
		if strings.HasPrefix(name, "gchd_") && strings.Count(name, "_") < 2 {
			t.Errorf("metric %s lacks a subsystem", name)
		}
	}

	for _, l := range []string{"own", "ann"} {
		s.addAccount(l, "pw-"+l, "")
	}
	phone := newPhone(t, s, "ann", "UDP")
	before := map[string]float64{
		"registered": value(t, s, "gchd_registrar_registrations_total", map[string]string{"result": "registered"}),
		"register":   value(t, s, "gchd_sip_requests_received_total", map[string]string{"method": "REGISTER"}),
		"challenged": value(t, s, "gchd_registrar_registrations_total", map[string]string{"result": "challenged"}),
	}
	phone.register()
	if got := value(t, s, "gchd_registrar_registrations_total", map[string]string{"result": "registered"}); got != before["registered"]+1 {
		t.Errorf("registrations{registered} = %v, want %v", got, before["registered"]+1)
	}
	if got := value(t, s, "gchd_registrar_registrations_total", map[string]string{"result": "challenged"}); got != before["challenged"]+1 {
		t.Errorf("registrations{challenged} = %v", got)
	}
	if got := value(t, s, "gchd_sip_requests_received_total", map[string]string{"method": "REGISTER"}); got != before["register"]+2 {
		t.Errorf("requests received{REGISTER} = %v, want +2", got)
	}
	if got := value(t, s, "gchd_registrar_contacts", map[string]string{"transport": "UDP"}); got != 1 {
		t.Errorf("contacts{UDP} = %v", got)
	}
	if got := value(t, s, "gchd_registrar_users_online", nil); got != 1 {
		t.Errorf("users online = %v", got)
	}

	id := groupOf(t, s, "own", "ann")
	s.must("ann", "joinGroup", map[string]any{"id": id})
	sendMID(t, s, "own", map[string]any{"id": id, "mb": "counted"})
	if got := value(t, s, "gchd_chat_events_total", map[string]string{"source": "http", "kind": "MSG"}); got != 1 {
		t.Errorf("events{http,MSG} = %v", got)
	}
	if got := value(t, s, "gchd_api_requests_total", map[string]string{"gm": "sendMessage", "code": "200"}); got != 1 {
		t.Errorf("api requests{sendMessage,200} = %v", got)
	}
	if got := value(t, s, "gchd_api_request_duration_seconds", map[string]string{"gm": "sendMessage"}); got != 1 {
		t.Errorf("api duration{sendMessage} count = %v", got)
	}
	eventually(t, func() bool {
		return value(t, s, "gchd_delivery_attempts_total", map[string]string{"outcome": "delivered"}) >= 3 // NG, EG, MSG
	})
	if got := value(t, s, "gchd_delivery_latency_seconds", nil); got < 3 {
		t.Errorf("delivery latency count = %v", got)
	}
	if got := value(t, s, "gchd_sip_requests_sent_total", map[string]string{"method": "MESSAGE"}); got < 3 {
		t.Errorf("requests sent{MESSAGE} = %v", got)
	}
	if got := value(t, s, "gchd_sip_responses_received_total", map[string]string{"method": "MESSAGE", "class": "2xx"}); got < 3 {
		t.Errorf("responses received{MESSAGE,2xx} = %v", got)
	}
	// own has no device: its NG waits (its own message is not due to it).
	if got := value(t, s, "gchd_delivery_pending", nil); got < 1 {
		t.Errorf("pending deliveries = %v", got)
	}
	if got := value(t, s, "gchd_db_transaction_duration_seconds", map[string]string{"op": "chat_update"}); got < 3 {
		t.Errorf("db transactions{chat_update} = %v", got)
	}
	if got := value(t, s, "gchd_build_info", nil); got != 1 {
		t.Errorf("build info = %v", got)
	}
}
