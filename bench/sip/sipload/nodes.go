package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// Several gchd nodes on one database: the lists of servers, APIs, metrics
// URLs and processes that fanout and relay take, and the CPU they used.

// splitList splits a comma-separated flag, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// listenAddrs returns n listen addresses from host:port: port, port+1, ...
// one socket per server, so that each node sees its members on a flow of
// their own.
func listenAddrs(listen string, n int) ([]string, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("listen port: %w", err)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = net.JoinHostPort(host, strconv.Itoa(port+i))
	}
	return out, nil
}

// parsePIDs reads a comma-separated list of process ids; 0 and empty items
// are none.
func parsePIDs(s string) ([]int, error) {
	var pids []int
	for _, item := range splitList(s) {
		pid, err := strconv.Atoi(item)
		if err != nil {
			return nil, fmt.Errorf("pid %q: %w", item, err)
		}
		if pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// cpuMeter reads the CPU of the gchd processes and, optionally, of every
// process with a given name (the database's backends, which come and go).
type cpuMeter struct {
	pids   []int
	dbProc string
}

func newCPUMeter(pids []int, dbProc string) *cpuMeter {
	return &cpuMeter{pids: pids, dbProc: dbProc}
}

// cpuSample is the ticks of each gchd process and of each database process.
type cpuSample struct {
	pids []int64
	db   map[int]int64
}

func (m *cpuMeter) read() cpuSample {
	s := cpuSample{pids: make([]int64, len(m.pids))}
	for i, pid := range m.pids {
		s.pids[i] = procTicks(pid)
	}
	if m.dbProc != "" {
		s.db = ticksByName(m.dbProc)
	}
	return s
}

// cpuUse is the CPU used between two samples: per cent of one core, and
// milliseconds in all.
type cpuUse struct {
	total    float64   // gchd, all processes, % of a core
	each     []float64 // gchd, per process
	ms       float64   // gchd, CPU milliseconds
	db, dbMS float64   // the database processes, when counted
	dbSeen   bool
}

// tickMS is one clock tick of /proc/PID/stat (USER_HZ, 100 on Linux).
const tickMS = 10.0

func (m *cpuMeter) use(a, b cpuSample, wall float64) cpuUse {
	var u cpuUse
	var ticks int64
	for i := range m.pids {
		d := b.pids[i] - a.pids[i]
		ticks += d
		u.each = append(u.each, 100*float64(d)*tickMS/1000/wall)
	}
	u.ms = float64(ticks) * tickMS
	u.total = u.ms / 10 / wall
	if m.dbProc != "" {
		var db int64
		// A backend born in the step counts from zero; one that ended in
		// it is lost (gchd keeps its connections, so that is rare).
		for pid, t := range b.db {
			db += t - a.db[pid]
		}
		u.dbSeen = true
		u.dbMS = float64(db) * tickMS
		u.db = u.dbMS / 10 / wall
	}
	return u
}

// perTransaction formats the CPU per transaction (what names it) and, with
// several processes, each one's share.
func (u cpuUse) perTransaction(what string, n int) string {
	s := ""
	if n > 0 && u.ms > 0 {
		s += fmt.Sprintf(" srvCPUms/%s=%.4f", what, u.ms/float64(n))
	}
	if len(u.each) > 1 {
		parts := make([]string, len(u.each))
		for i, e := range u.each {
			parts[i] = fmt.Sprintf("%.1f%%", e)
		}
		s += " srvCPUeach=[" + strings.Join(parts, " ") + "]"
	}
	if u.dbSeen {
		s += fmt.Sprintf(" dbCPU=%.1f%%", u.db)
		if n > 0 {
			s += fmt.Sprintf(" dbCPUms/%s=%.4f", what, u.dbMS/float64(n))
		}
	}
	return s
}

// ticksByName returns the ticks of every process whose name is name.
func ticksByName(name string) map[int]int64 {
	out := map[int]int64{}
	dir, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, e := range dir {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, err := os.ReadFile("/proc/" + e.Name() + "/comm")
		if err != nil || strings.TrimSpace(string(comm)) != name {
			continue
		}
		out[pid] = procTicks(pid)
	}
	return out
}

// sumCounters reads a Prometheus counter family from every URL and sums it
// by label value: lines "<prefix>VALUE<sep>NUMBER". It returns nil if a
// server did not answer: a partial sum would read as a drop.
func sumCounters(urls []string, prefix, sep string) map[string]float64 {
	if len(urls) == 0 {
		return nil
	}
	client := &http.Client{Timeout: 5 * time.Second}
	out := map[string]float64{}
	for _, u := range urls {
		resp, err := client.Get(u)
		if err != nil {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, prefix) {
				continue
			}
			name, value, ok := strings.Cut(line[len(prefix):], sep)
			if !ok {
				continue
			}
			if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
				out[name] += v
			}
		}
	}
	return out
}
