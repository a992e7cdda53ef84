//go:build !linux

package sipserver

import "net"

// readBufferSize is not known outside Linux; nothing is reported.
func readBufferSize(*net.UDPConn) (int, bool) { return 0, false }
