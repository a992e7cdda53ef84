//go:build !unix

package browser

import (
	"os/exec"
	"time"
)

func ownProcessGroup(*exec.Cmd) {}

// stopProcessGroup kills the command: without process groups its helper
// processes are left to notice on their own.
func stopProcessGroup(cmd *exec.Cmd, exited <-chan struct{}, grace time.Duration) {
	cmd.Process.Kill()
}
