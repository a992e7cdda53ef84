package chat

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Text limits, counted in characters (runes), not bytes.
const (
	MaxSubjectChars     = 30
	MaxDisplayNameChars = 100
	MaxLoginChars       = 64
)

// GroupUserPrefix starts the user part of every group's SIP address
// (sip:gc-<GID>@domain), so no login may start with it.
const GroupUserPrefix = "gc-"

// ValidLogin reports whether s can be a login: 1 to 64 characters that are
// safe unescaped in the user part of a SIP URI, not starting with the group
// prefix. Phone numbers such as +48500100200 are valid.
func ValidLogin(s string) bool {
	if s == "" || len(s) > MaxLoginChars || strings.HasPrefix(strings.ToLower(s), GroupUserPrefix) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '-' || c == '_' || c == '+' || c == '~':
		default:
			return false
		}
	}
	return true
}

// checkSubject validates a group subject: not blank, at most 30 characters.
func checkSubject(s string) error {
	if !utf8.ValidString(s) {
		return invalid("subject is not UTF-8")
	}
	if strings.TrimSpace(s) == "" {
		return invalid("subject is empty")
	}
	if n := utf8.RuneCountInString(s); n > MaxSubjectChars {
		return invalid("subject has %d characters, at most %d allowed", n, MaxSubjectChars)
	}
	if hasControl(s) {
		return invalid("subject contains control characters")
	}
	return nil
}

// checkDisplayName validates an optional display name.
func checkDisplayName(s string) error {
	if !utf8.ValidString(s) {
		return invalid("display name is not UTF-8")
	}
	if n := utf8.RuneCountInString(s); n > MaxDisplayNameChars {
		return invalid("display name has %d characters, at most %d allowed", n, MaxDisplayNameChars)
	}
	if hasControl(s) {
		return invalid("display name contains control characters")
	}
	return nil
}

// checkText validates a message text. Control characters such as newlines
// are fine in a message body; NUL, encoding and size are checked.
func (s *Service) checkText(text string) error {
	if text == "" {
		return invalid("message is empty")
	}
	if !utf8.ValidString(text) {
		return invalid("message is not UTF-8")
	}
	if strings.IndexByte(text, 0) >= 0 {
		// PostgreSQL text cannot hold NUL, and no SIP client expects one.
		return invalid("message contains NUL")
	}
	if len(text) > s.limits.MaxMessageBytes {
		return invalid("message has %d bytes, at most %d allowed", len(text), s.limits.MaxMessageBytes)
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// checkInvitees validates logins and display names of invitees and returns
// them without duplicates or the caller, in the order given.
func checkInvitees(caller string, in []Invitee) ([]Invitee, error) {
	seen := make(map[string]bool, len(in))
	out := make([]Invitee, 0, len(in))
	for _, inv := range in {
		if !ValidLogin(inv.Login) {
			return nil, invalid("login %q is not valid", inv.Login)
		}
		if err := checkDisplayName(inv.DisplayName); err != nil {
			return nil, err
		}
		if inv.Login == caller || seen[inv.Login] {
			continue
		}
		seen[inv.Login] = true
		out = append(out, inv)
	}
	return out, nil
}

// checkLogins validates a list of logins and drops duplicates.
func checkLogins(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, invalid("no logins given")
	}
	seen := make(map[string]bool, len(in))
	out := make([]string, 0, len(in))
	for _, l := range in {
		if !ValidLogin(l) {
			return nil, invalid("login %q is not valid", l)
		}
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	return out, nil
}
