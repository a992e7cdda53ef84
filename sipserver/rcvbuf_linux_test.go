package sipserver

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The buffer the kernel grants is read back, and a request over
// net.core.rmem_max is reported as a warning that names the sysctl.
func TestUDPReadBufferReported(t *testing.T) {
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()

	var logs bytes.Buffer
	s := &Stack{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	s.opts.UDPReadBuffer = 128 << 10
	s.setUDPReadBuffer(uc)
	if got, ok := readBufferSize(uc); !ok || got < 128<<10 {
		t.Fatalf("granted %d (%v), want at least 128 KiB", got, ok)
	}
	if strings.Contains(logs.String(), "WARN") {
		t.Fatalf("a small buffer warned: %s", logs.String())
	}

	raw, err := os.ReadFile("/proc/sys/net/core/rmem_max")
	if err != nil {
		t.Skip("no /proc/sys/net/core/rmem_max")
	}
	rmemMax, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	// Privileged processes may exceed rmem_max with SO_RCVBUFFORCE, but
	// SetReadBuffer uses SO_RCVBUF, which the kernel caps for everyone.
	s.opts.UDPReadBuffer = 2*rmemMax + 1<<20
	logs.Reset()
	s.setUDPReadBuffer(uc)
	if !strings.Contains(logs.String(), "net.core.rmem_max") {
		t.Fatalf("over rmem_max (%d): want a warning naming net.core.rmem_max, logged %q", rmemMax, logs.String())
	}
}
