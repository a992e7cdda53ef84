package sipua

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/icholy/digest"
)

// Authorize answers a digest challenge (a WWW-Authenticate or
// Proxy-Authenticate value) for method and uri, for clients that write
// SIP by hand; the answer is the Authorization value.
func Authorize(challenge, method, uri, login, password string) (string, error) {
	chal, err := digest.ParseChallenge(challenge)
	if err != nil {
		return "", fmt.Errorf("challenge: %w", err)
	}
	cnonce := make([]byte, 8)
	if _, err := rand.Read(cnonce); err != nil {
		return "", fmt.Errorf("cnonce: %w", err)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: method, URI: uri, Username: login, Password: password,
		Count: 1, Cnonce: hex.EncodeToString(cnonce)})
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	return cred.String(), nil
}
