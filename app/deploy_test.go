package app

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"gchd/configs"
)

// deployFiles are the monitoring files of deploy/ whose queries name gchd's
// metrics.
var deployFiles = []string{
	filepath.Join("..", "deploy", "grafana", "gchd.json"),
	filepath.Join("..", "deploy", "prometheus", "alerts.yml"),
}

// metricNameRe finds the names of gchd's own, Go's and the process's
// metrics; group 1 is the name.
var metricNameRe = regexp.MustCompile(`(?:^|[^A-Za-z0-9_])((?:gchd|go|process)_[A-Za-z0-9_]*[A-Za-z0-9])`)

// usedMetricNames returns the metric names a file mentions, sorted.
func usedMetricNames(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, m := range metricNameRe.FindAllStringSubmatch(string(data), -1) {
		seen[m[1]] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// exported reports whether name is a metric family of families, or a
// series of one: name_bucket of a histogram, name_sum and name_count of a
// histogram or a summary.
func exported(families map[string]dto.MetricType, name string) bool {
	if _, ok := families[name]; ok {
		return true
	}
	for suffix, types := range map[string][]dto.MetricType{
		"_bucket": {dto.MetricType_HISTOGRAM},
		"_sum":    {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
		"_count":  {dto.MetricType_HISTOGRAM, dto.MetricType_SUMMARY},
	} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		if typ, ok := families[base]; ok {
			for _, want := range types {
				if typ == want {
					return true
				}
			}
		}
	}
	return false
}

// The Grafana dashboard and the alert rules of deploy/ query only metrics
// that gchd exports, under exactly their names. Series of a labelled
// metric appear only once something is counted, so the server first sees
// a registration, a failed login, group traffic delivered to a phone, a
// failed database transaction and a ban.
func TestDeployMetricNames(t *testing.T) {
	s := startSIP(t, func(c *configs.Config) {
		c.Limits.AuthFailures = 3
		c.Limits.AuthWindow = time.Minute
		c.Limits.AuthBan = time.Minute
	})
	for _, l := range []string{"own", "ann"} {
		s.addAccount(l, "pw-"+l, "")
	}
	phone := newPhone(t, s, "ann", "UDP")
	phone.register()

	// A wrong password: gchd_sip_auth_failures_total.
	intruder := newPhone(t, s, "own", "UDP")
	intruder.password = "not-the-password"
	if res := intruder.send(intruder.registerRequest(300)); res.StatusCode < 400 {
		t.Fatalf("REGISTER with a wrong password: %s", res.StartLine())
	}

	// Group traffic delivered to ann's phone; own has no device, so its
	// deliveries stay pending.
	id := groupOf(t, s, "own", "ann")
	s.must("ann", "joinGroup", map[string]any{"id": id})
	sendMID(t, s, "own", map[string]any{"id": id, "mb": "deploy"})
	eventually(t, func() bool {
		return value(t, s, "gchd_delivery_attempts_total", map[string]string{"outcome": "delivered"}) >= 3
	})

	// gchd_db_errors_total exists from the start, at zero for each
	// operation; a transaction cut short by its caller is not an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.app.db.Secret(ctx, "deploy-test"); err == nil {
		t.Fatal("a transaction with a cancelled context succeeded")
	}
	if got := value(t, s, "gchd_db_errors_total", map[string]string{"op": "secret"}); got != 0 {
		t.Fatalf("a cancelled transaction counted as a database error: %v", got)
	}

	// Failed logins until 127.0.0.1 is banned: gchd_limits_rejections_total.
	banned := false
	for i := 0; i < 5 && !banned; i++ {
		banned = s.call("own", "wrong", "getGroup", map[string]any{"id": id}).status == 429
	}
	if !banned {
		t.Fatal("failed logins did not lead to a ban")
	}

	gathered, err := s.app.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]dto.MetricType{}
	for _, f := range gathered {
		families[f.GetName()] = f.GetType()
	}
	for _, path := range deployFiles {
		names := usedMetricNames(t, path)
		if len(names) == 0 {
			t.Errorf("%s names no metric", path)
		}
		var gchd, missing int
		for _, name := range names {
			if strings.HasPrefix(name, "gchd_") {
				gchd++
			}
			if !exported(families, name) {
				t.Errorf("%s uses %s, which gchd does not export", path, name)
				missing++
			}
		}
		t.Logf("%s: %d metric names (%d of gchd's), %d not exported", path, len(names), gchd, missing)
	}

	t.Run("dashboard", func(t *testing.T) {
		data, err := os.ReadFile(deployFiles[0])
		if err != nil {
			t.Fatal(err)
		}
		var d struct {
			Panels []struct {
				Type       string
				Title      string
				Datasource struct{ UID string }
				Targets    []struct{ Expr string }
			}
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("gchd.json: %v", err)
		}
		for _, p := range d.Panels {
			if p.Type == "row" {
				continue
			}
			if p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %q, want ${DS_PROMETHEUS}", p.Title, p.Datasource.UID)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("panel %q has an empty query", p.Title)
				}
			}
		}
	})

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool is not installed")
		}
		for _, args := range [][]string{
			{"check", "rules", "alerts.yml"},
			{"test", "rules", "alerts_test.yml"},
		} {
			cmd := exec.Command(promtool, args...)
			cmd.Dir = filepath.Join("..", "deploy", "prometheus")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
	})
}
