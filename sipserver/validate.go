package sipserver

import "github.com/emiago/sipgo/sip"

// validate checks a request before any handler sees it and returns the
// response that rejects it, or nil when it may proceed.
func (s *Server) validate(req *sip.Request) *sip.Response {
	return nil
}
