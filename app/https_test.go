package app

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"gchd/configs"
)

// The API also serves HTTPS when a certificate is configured: basic auth
// must not cross a network in clear.
func TestHTTPS(t *testing.T) {
	cert, key := selfSigned(t)
	s := startEngine(t, "sqlite", func(c *configs.Config) {
		c.HTTP.TLSAddr = "127.0.0.1:0"
		c.TLS.Cert, c.TLS.Key = cert, key
	})
	s.addAccount("own", "pw-own", "")
	addr := s.app.listenAddr("http.tls_addr")
	if addr == "" {
		t.Fatal("no HTTPS listener")
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	form := url.Values{"gm": {"addGroup"}, "pm": {`{"gs":"over TLS"}`}}
	req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/gch.ashx", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("own", "pw-own")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Fatalf("HTTPS addGroup: %d, TLS %v", res.StatusCode, res.TLS != nil)
	}
	// Plain HTTP to the TLS port is refused.
	if res, err := http.Get("http://" + addr + "/healthz"); err == nil && res.StatusCode == 200 {
		t.Fatal("the HTTPS port answered plain HTTP")
	}
}
