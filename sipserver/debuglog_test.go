package sipserver

import (
	"io"
	"log/slog"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// The debug lines of a request and its answer cost nothing measurable at
// info level: the REGISTER path is hot.
func BenchmarkDebugLinesOff(b *testing.B) {
	s := &Server{Stack: &Stack{log: slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo})).With("part", "sip")}}
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: "example.com"})
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "alice", Host: "example.com"}})
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	b.ReportAllocs()
	for b.Loop() {
		s.debugRequest(req)
		s.debugAnswer(req, res, nil)
	}
	if n := testing.AllocsPerRun(100, func() { s.debugRequest(req); s.debugAnswer(req, res, nil) }); n != 0 {
		b.Fatalf("%v allocations per request with debug off", n)
	}
}
