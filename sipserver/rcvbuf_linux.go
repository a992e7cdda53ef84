package sipserver

import (
	"net"
	"syscall"
)

// readBufferSize returns the receive buffer the kernel granted. Linux
// reports twice the usable size (it counts its bookkeeping), hence the
// halving.
func readBufferSize(uc *net.UDPConn) (int, bool) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, false
	}
	var n int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		n, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
	}); err != nil || gerr != nil {
		return 0, false
	}
	return n / 2, true
}
