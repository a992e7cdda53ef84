package sipserver

import (
	"net"
)

// setUDPReadBuffer asks for sip.udp_read_buffer and warns when the kernel
// grants less: Linux silently caps SO_RCVBUF at net.core.rmem_max (208 KiB
// by default), and a burst of REGISTERs then overflows the socket.
func (s *Stack) setUDPReadBuffer(uc *net.UDPConn) {
	want := s.opts.UDPReadBuffer
	if err := uc.SetReadBuffer(want); err != nil {
		s.log.Warn("cannot set the UDP receive buffer", "sip.udp_read_buffer", want, "error", err)
		return
	}
	got, ok := readBufferSize(uc)
	if !ok {
		return
	}
	if got < want {
		s.log.Warn("the kernel granted a smaller UDP receive buffer than sip.udp_read_buffer: raise net.core.rmem_max (sysctl) to let bursts through",
			"wanted", want, "granted", got)
		return
	}
	s.log.Debug("UDP receive buffer", "bytes", got)
}
