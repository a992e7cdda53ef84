package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// sippPath finds SIPp (Debian package sip-tester); ./test.sh installs it.
func sippPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("sipp")
	if err != nil {
		t.Skip("sipp is not installed (apt-get install sip-tester; ./test.sh installs it)")
	}
	return p
}

func scenario(name string) string {
	p, _ := filepath.Abs(filepath.Join("..", "bench", "sipp", name))
	return p
}

// runSIPp runs SIPp to completion and fails the test on a non-zero exit.
func runSIPp(t *testing.T, sipp string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, sipp, append(args, "-nostdin", "-i", "127.0.0.1")...).CombinedOutput()
	if err != nil {
		t.Fatalf("sipp %s: %v\n%s", strings.Join(args, " "), err, tail(out, 3000))
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// SIPp, a third-party user agent, takes part: five members register with
// digest auth from SIPp, a SIPp server answers their group messages, and a
// SIPp client posts to the group's address.
func TestSIPpMembers(t *testing.T) {
	sipp := sippPath(t)
	s := startSIP(t)
	dir := t.TempDir()
	var members []string
	var csv strings.Builder
	csv.WriteString("SEQUENTIAL\n")
	for i := 1; i <= 5; i++ {
		l, pw := fmt.Sprintf("user%05d", i), fmt.Sprintf("pass%05d", i)
		members = append(members, l)
		s.addAccount(l, pw, "")
		fmt.Fprintf(&csv, "%s;%s;[authentication username=%s password=%s]\n", l, pw, l, pw)
	}
	s.addAccount("owner", "pw-owner", "")
	usersCSV := filepath.Join(dir, "users.csv")
	os.WriteFile(usersCSV, []byte(csv.String()), 0o600)
	id := groupOf(t, s, "owner", members...)
	for _, m := range members {
		s.call(m, strings.Replace(m, "user", "pass", 1), "joinGroup", map[string]any{"id": id})
	}

	// The members' phone: a SIPp server on its own port.
	pc, _ := net.ListenPacket("udp", "127.0.0.1:0")
	uasPort := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	uas := exec.Command(sipp, "-sf", scenario("member_uas.xml"), "-p", fmt.Sprint(uasPort), "-i", "127.0.0.1", "-nostdin",
		"-trace_stat", "-stf", filepath.Join(dir, "uas_stats.csv"), "-fd", "1")
	uas.Dir = dir
	if err := uas.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uas.Process.Kill(); uas.Wait() })

	server := s.app.SIPAddr("UDP")
	runSIPp(t, sipp, server, "-sf", scenario("register_auth.xml"), "-inf", usersCSV, "-m", "5", "-r", "50",
		"-key", "domain", testDomain, "-key", "contact_host", "127.0.0.1", "-key", "contact_port", fmt.Sprint(uasPort),
		"-key", "expires", "300", "-timeout", "30s", "-timeout_error")

	// Messages from the API reach SIPp, which answers 200: cf is set.
	var mids []uint64
	for i := 0; i < 3; i++ {
		mids = append(mids, sendMID(t, s, "owner", map[string]any{"id": id, "mb": fmt.Sprintf("to sipp %d", i)}))
	}
	for _, mid := range mids {
		eventually(t, func() bool {
			var info []map[string]string
			s.must("owner", "getMessageInfo", map[string]any{"id": id, "mid": mid}).json(t, &info)
			confirmed := 0
			for _, r := range info {
				if r["cf"] != "" {
					confirmed++
				}
			}
			return len(info) == 5 && confirmed == 5
		})
	}

	// A SIPp client posts to the group's address with digest auth.
	runSIPp(t, sipp, server, "-sf", scenario("message_auth.xml"), "-inf", usersCSV, "-m", "1",
		"-key", "domain", testDomain, "-key", "to", fmt.Sprintf("gc-%d", id), "-timeout", "30s", "-timeout_error")
	var hist struct {
		M []struct{ L, MB, K string }
	}
	s.must("owner", "getMessages", map[string]any{"id": id, "limit": 200}).json(t, &hist)
	found := false
	for _, m := range hist.M {
		if m.K == "MSG" && m.L == "user00001" && strings.Contains(m.MB, "from sipp") {
			found = true
		}
	}
	if !found {
		t.Fatalf("SIPp's post is not in the group's history: %+v", hist.M)
	}
}
