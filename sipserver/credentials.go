package sipserver

import (
	"errors"
	"strconv"
	"strings"
)

// credentials are the fields of a Digest Authorization (or
// Proxy-Authorization) header that verification uses (RFC 7616 3.4).
type credentials struct {
	Username, Realm, Nonce, URI, Response, Algorithm, Cnonce, QOP string
	Nc                                                            int
}

var errCredentials = errors.New("malformed digest credentials")

// parseCredentials parses a header value of the Digest scheme: a list of
// auth-params, token=token or token="quoted string" (RFC 7235 2.1), in any
// order and case. It runs on every authenticated request, so values are
// slices of v: only a quoted value with escapes is copied.
func parseCredentials(v string) (credentials, error) {
	var c credentials
	v = trimOWS(v)
	i := strings.IndexAny(v, " \t")
	if i < 0 || !strings.EqualFold(v[:i], "Digest") {
		return c, errCredentials
	}
	rest := v[i:]
	for first := true; ; first = false {
		rest = trimOWS(rest)
		if rest == "" {
			return c, nil
		}
		if !first {
			if rest[0] != ',' {
				return c, errCredentials
			}
			rest = trimOWS(rest[1:])
		}
		n := tokenLen(rest)
		if n == 0 {
			return c, errCredentials
		}
		key := rest[:n]
		rest = trimOWS(rest[n:])
		if rest == "" || rest[0] != '=' {
			return c, errCredentials
		}
		rest = trimOWS(rest[1:])
		var val string
		if rest != "" && rest[0] == '"' {
			var err error
			if val, rest, err = quotedString(rest); err != nil {
				return c, err
			}
		} else {
			n := tokenLen(rest)
			if n == 0 {
				return c, errCredentials
			}
			val, rest = rest[:n], rest[n:]
		}
		switch strings.ToLower(key) {
		case "username":
			c.Username = val
		case "realm":
			c.Realm = val
		case "nonce":
			c.Nonce = val
		case "uri":
			c.URI = val
		case "response":
			c.Response = val
		case "algorithm":
			c.Algorithm = val
		case "cnonce":
			c.Cnonce = val
		case "qop":
			c.QOP = val
		case "nc":
			nc, err := strconv.ParseUint(val, 16, 31)
			if err != nil {
				return c, errCredentials
			}
			c.Nc = int(nc)
		}
	}
}

func trimOWS(s string) string { return strings.TrimLeft(s, " \t") }

// tokenLen is the length of the RFC 7230 token at the start of s.
func tokenLen(s string) int {
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return i
		}
	}
	return len(s)
}

// quotedString reads the quoted-string at the start of s and returns its
// value and what follows it.
func quotedString(s string) (val, rest string, err error) {
	escaped := false
	for i := 1; i < len(s); i++ {
		switch s[i] {
		case '\\':
			escaped = true
			i++ // the next byte is taken as it is
		case '"':
			if !escaped {
				return s[1:i], s[i+1:], nil
			}
			var b strings.Builder
			for j := 1; j < i; j++ {
				if s[j] == '\\' {
					j++
				}
				b.WriteByte(s[j])
			}
			return b.String(), s[i+1:], nil
		case '\r', '\n':
			return "", "", errCredentials
		}
	}
	return "", "", errCredentials
}
