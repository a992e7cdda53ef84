package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"gchd/configs"
	"gchd/internal/testkit"
	"gchd/storage"
)

const testDomain = testkit.Domain

// server is a real gchd started on ephemeral ports for one test.
type server struct {
	t      testing.TB
	app    *App
	cfg    configs.Config
	base   string // http://127.0.0.1:port
	run    *testkit.Running[*App]
	client *http.Client
}

// testLogger logs to stderr when GCHD_TEST_LOG is set, else nowhere.
func testLogger() *slog.Logger { return testkit.Logger() }

// testConfig is the configuration of a test server on a fresh database.
func testConfig(t testing.TB, engine storage.Engine) configs.Config {
	t.Helper()
	return testkit.Config(t, engine)
}

// start runs a server with cfg until the test ends.
func start(t testing.TB, cfg configs.Config) *server {
	t.Helper()
	return startWith(t, cfg, testLogger(), nil)
}

// startWith is start with a logger and a hook between New and Run.
func startWith(t testing.TB, cfg configs.Config, log *slog.Logger, tune func(*App)) *server {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	run := testkit.Start(t, func(ctx context.Context) (*App, error) {
		a, err := New(ctx, cfg, log)
		if err == nil && tune != nil {
			tune(a)
		}
		return a, err
	})
	a := run.Server
	return &server{t: t, app: a, cfg: cfg, base: "http://" + a.HTTPAddr(), run: run,
		client: &http.Client{Timeout: 30 * time.Second}}
}

func startEngine(t testing.TB, engine storage.Engine, mutate ...func(*configs.Config)) *server {
	t.Helper()
	cfg := testConfig(t, engine)
	for _, m := range mutate {
		m(&cfg)
	}
	return start(t, cfg)
}

// stop ends the server before the test does; a stand-in of a server
// started elsewhere (run nil) has nothing to stop.
func (s *server) stop() {
	if s.run != nil {
		s.run.Stop()
	}
}

// dial opens a raw socket to gchd's SIP listener of transport (UDP or
// TCP), for tests that write SIP by hand; it closes with the test.
func (s *server) dial(transport string) net.Conn {
	s.t.Helper()
	c, err := net.Dial(strings.ToLower(transport), s.app.SIPAddr(transport))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

func (s *server) addAccount(login, password, dn string) {
	s.t.Helper()
	if err := s.app.accounts.Add(context.Background(), login, password, dn); err != nil {
		s.t.Fatalf("add account %s: %v", login, err)
	}
}

// reply is an HTTP answer.
type reply struct {
	status int
	body   []byte
	header http.Header
}

func (r reply) String() string { return fmt.Sprintf("%d %q", r.status, r.body) }

// code is the result code in the body (or the status for non-code bodies).
func (r reply) code() int {
	var c int
	if _, err := fmt.Sscanf(string(r.body), "%d", &c); err == nil && len(r.body) == 3 {
		return c
	}
	return r.status
}

func (r reply) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("answer %s is not JSON: %v", r, err)
	}
}

func (s *server) do(req *http.Request) reply {
	s.t.Helper()
	res, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		s.t.Fatalf("read answer: %v", err)
	}
	return reply{status: res.StatusCode, body: body, header: res.Header}
}

// pmJSON renders pm: a string as is, anything else as JSON.
func pmJSON(t testing.TB, pm any) string {
	if s, ok := pm.(string); ok {
		return s
	}
	b, err := json.Marshal(pm)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// call POSTs gm and pm as a url-encoded form with basic auth.
func (s *server) call(login, password, gm string, pm any) reply {
	s.t.Helper()
	form := url.Values{"gm": {gm}}
	if pm != nil {
		form.Set("pm", pmJSON(s.t, pm))
	}
	req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if login != "" {
		req.SetBasicAuth(login, password)
	}
	return s.do(req)
}

// get sends gm and pm in the query string of a GET.
func (s *server) get(path, login, password string, query url.Values) reply {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base+path+"?"+query.Encode(), nil)
	if login != "" {
		req.SetBasicAuth(login, password)
	}
	return s.do(req)
}

// upload sends a multipart uploadAvatar with the file under fileField.
func (s *server) upload(login, password string, pm any, fileField, filename string, data []byte) reply {
	s.t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	mw.WriteField("gm", "uploadAvatar")
	mw.WriteField("pm", pmJSON(s.t, pm))
	fw, _ := mw.CreateFormFile(fileField, filename)
	fw.Write(data)
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", &b)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth(login, password)
	return s.do(req)
}

// must calls and fails the test unless the answer is HTTP 200.
func (s *server) must(login, gm string, pm any) reply {
	s.t.Helper()
	r := s.call(login, "pw-"+login, gm, pm)
	if r.status != 200 {
		s.t.Fatalf("%s by %s (%s): %s", gm, login, pmJSON(s.t, pm), r)
	}
	return r
}

// rowCounts counts the rows of every table, to show that a refused call
// changed nothing.
func (s *server) rowCounts() map[string]int {
	s.t.Helper()
	counts, err := s.app.db.TableCounts(context.Background())
	if err != nil {
		s.t.Fatal(err)
	}
	return counts
}

// metricAtLeast reports whether the named sample (name{labels}) on
// /metrics is at least min.
func metricAtLeast(t testing.TB, s *server, sample string, min float64) bool {
	t.Helper()
	v, ok := metricValue(t, s, sample)
	return ok && v >= min
}

// metricValue returns the named sample (name{labels}) on /metrics.
func metricValue(t testing.TB, s *server, sample string) (float64, bool) {
	t.Helper()
	res, err := s.client.Get(s.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, sample+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(line, sample+" "), &v)
			return v, true
		}
	}
	return 0, false
}
