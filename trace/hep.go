// Package trace mirrors SIP traffic to a capture server (Homer) in HEPv3,
// as Kamailio's siptrace and OpenSIPS' proto_hep do. It knows no SIP: it
// is handed each message as it went over the wire, with its addresses.
package trace

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// HEPv3 chunk types (generic vendor 0), from the HEP3 specification.
const (
	chunkIPFamily  = 1
	chunkIPProto   = 2
	chunkSrcIPv4   = 3
	chunkDstIPv4   = 4
	chunkSrcIPv6   = 5
	chunkDstIPv6   = 6
	chunkSrcPort   = 7
	chunkDstPort   = 8
	chunkTimeSec   = 9
	chunkTimeUsec  = 10
	chunkProtoType = 11
	chunkAgentID   = 12
	chunkPayload   = 15

	familyIPv4 = 2
	familyIPv6 = 10
	// ProtoSIP is the HEP protocol type of SIP.
	ProtoSIP = 1
	// IP protocol numbers: UDP, and TCP for TLS and WebSocket too.
	ProtoUDP = 17
	ProtoTCP = 6
)

// Packet is one captured message.
type Packet struct {
	Src, Dst netip.AddrPort
	IPProto  uint8 // ProtoUDP or ProtoTCP
	Time     time.Time
	AgentID  uint32
	Payload  []byte
}

// Encode returns p as one HEPv3 packet.
func Encode(p Packet) []byte {
	src, dst := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	v4 := src.Is4() && dst.Is4()
	if !v4 {
		// A family for both: an IPv4 address given with an IPv6 peer is
		// written in its mapped form.
		src, dst = netip.AddrFrom16(src.As16()), netip.AddrFrom16(dst.As16())
	}
	b := make([]byte, 6, 6+7+7+2*(6+16)+2*8+2*10+7+10+6+len(p.Payload))
	copy(b, "HEP3")
	u8 := func(t uint16, v uint8) { b = appendChunk(b, t, []byte{v}) }
	u16 := func(t uint16, v uint16) { b = appendChunk(b, t, binary.BigEndian.AppendUint16(nil, v)) }
	u32 := func(t uint16, v uint32) { b = appendChunk(b, t, binary.BigEndian.AppendUint32(nil, v)) }
	if v4 {
		u8(chunkIPFamily, familyIPv4)
		s, d := src.As4(), dst.As4()
		u8(chunkIPProto, p.IPProto)
		b = appendChunk(b, chunkSrcIPv4, s[:])
		b = appendChunk(b, chunkDstIPv4, d[:])
	} else {
		u8(chunkIPFamily, familyIPv6)
		s, d := src.As16(), dst.As16()
		u8(chunkIPProto, p.IPProto)
		b = appendChunk(b, chunkSrcIPv6, s[:])
		b = appendChunk(b, chunkDstIPv6, d[:])
	}
	u16(chunkSrcPort, p.Src.Port())
	u16(chunkDstPort, p.Dst.Port())
	u32(chunkTimeSec, uint32(p.Time.Unix()))
	u32(chunkTimeUsec, uint32(p.Time.Nanosecond()/1000))
	u8(chunkProtoType, ProtoSIP)
	u32(chunkAgentID, p.AgentID)
	b = appendChunk(b, chunkPayload, p.Payload)
	binary.BigEndian.PutUint16(b[4:6], uint16(len(b)))
	return b
}

func appendChunk(b []byte, typ uint16, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, 0) // generic vendor
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(6+len(v)))
	return append(b, v...)
}

// maxPayload keeps a HEP packet within one UDP datagram.
const maxPayload = 65535 - 200

// QueueSize bounds the packets waiting to be sent: past it, packets are
// dropped and counted, never waited for.
const QueueSize = 4096

// HEP sends captured packets to a collector over UDP, from a queue of its
// own: capturing never waits on the network.
type HEP struct {
	conn    net.Conn
	agentID uint32
	queue   chan []byte
	onDrop  func()
	dropped atomic.Uint64
	sent    atomic.Uint64
	once    sync.Once
	stop    chan struct{}
	done    chan struct{}
}

// NewHEP sends to the collector at addr (host:port, UDP). onDrop, if not
// nil, is called for each packet dropped because the queue was full.
func NewHEP(addr string, agentID uint32, onDrop func()) (*HEP, error) {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("hep collector %s: %w", addr, err)
	}
	h := &HEP{conn: conn, agentID: agentID, queue: make(chan []byte, QueueSize), onDrop: onDrop,
		stop: make(chan struct{}), done: make(chan struct{})}
	go h.run()
	return h, nil
}

// Capture queues one message that went from src to dst at t. data is
// copied: the caller may reuse it at once.
func (h *HEP) Capture(ipProto uint8, src, dst netip.AddrPort, t time.Time, data []byte) {
	if len(data) > maxPayload {
		data = data[:maxPayload]
	}
	pkt := Encode(Packet{Src: src, Dst: dst, IPProto: ipProto, Time: t, AgentID: h.agentID, Payload: data})
	select {
	case h.queue <- pkt:
	default:
		h.dropped.Add(1)
		if h.onDrop != nil {
			h.onDrop()
		}
	}
}

// Dropped returns how many packets the full queue refused.
func (h *HEP) Dropped() uint64 { return h.dropped.Load() }

// Sent returns how many packets were written to the collector.
func (h *HEP) Sent() uint64 { return h.sent.Load() }

func (h *HEP) run() {
	defer close(h.done)
	for {
		select {
		case pkt := <-h.queue:
			h.write(pkt)
		case <-h.stop:
			for {
				select {
				case pkt := <-h.queue:
					h.write(pkt)
				default:
					return
				}
			}
		}
	}
}

// write sends one packet. A collector that is down answers with ICMP,
// which a later write reports: ignored, as a capture must fail nothing.
func (h *HEP) write(pkt []byte) {
	if _, err := h.conn.Write(pkt); err == nil {
		h.sent.Add(1)
	}
}

// Close sends what is queued and closes the socket. A Capture after it
// is queued and never sent: the queue is not closed, so that a late
// capture cannot panic.
func (h *HEP) Close() error {
	h.once.Do(func() { close(h.stop) })
	<-h.done
	return h.conn.Close()
}
