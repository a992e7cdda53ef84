//go:build unix

package browser

import (
	"os/exec"
	"syscall"
	"time"
)

// ownProcessGroup puts the command in a process group of its own, so that
// Chromium's helper processes can be stopped with it.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// stopProcessGroup sends SIGTERM to the command's process group, and
// SIGKILL when the command has not exited within grace.
func stopProcessGroup(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	pgid := cmd.Process.Pid
	syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
	}
	// Helpers that outlived the browser process go too.
	syscall.Kill(-pgid, syscall.SIGKILL)
}
