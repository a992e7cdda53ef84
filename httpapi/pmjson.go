package httpapi

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
)

// The reference server read pm with a lenient .NET JSON reader (Json.NET
// reads a trailing comma, and numbers and booleans given as strings), and
// clients copied the specification, whose downloadAvatar example has a
// trailing comma and most others lack the comma after "id". This file takes
// those forms, each only where a client can mean one thing, and leaves
// everything else to encoding/json, which refuses it (400). docs/api.md,
// "How pm is read", lists the rules.

// lenientJSON rewrites a JSON text into strict JSON in two ways, both
// outside strings only:
//   - a comma after a value that is followed by the closing brace or bracket
//     (`{"id": 1,}`, `["a",]`) is dropped;
//   - where an object member's value is followed, without a comma, by a
//     string that a colon follows (`{"id": 100 "dn": "x"}`), the comma is
//     put in.
//
// Nothing else changes: `[1 2]`, `{"mb": "a" "b"}`, `{,}`, `[1,,2]` and
// `{"id":,}` stay as they are, and the decoder refuses them.
func lenientJSON(s string) string {
	var (
		edits []int  // where a comma goes (>= 0) or is dropped (^index)
		stack []byte // the open '{' and '[' around the current position
		// last is the kind of the last token outside whitespace: 0 at the
		// start, '{' '[' ',' ':' as themselves, 'k' the end of an object
		// key, 'v' the end of a value.
		last byte
		// comma is the index of the last comma, and commaAfter whether it
		// came after a value (only such a comma may be dropped).
		comma      int
		commaAfter bool
	)
	inObject := func() bool { return len(stack) > 0 && stack[len(stack)-1] == '{' }
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ' ', '\t', '\n', '\r':
		case '"':
			end := stringEnd(s, i)
			if end < 0 {
				i = len(s) // unterminated: the decoder says so
				continue
			}
			kind := byte('v')
			switch {
			case inObject() && (last == '{' || last == ','):
				kind = 'k'
			case inObject() && last == 'v' && colonAt(s, end):
				edits = append(edits, i)
				kind = 'k'
			}
			i = end - 1
			last = kind
		case ',':
			comma, commaAfter = i, last == 'v'
			last = ','
		case '}', ']':
			if last == ',' && commaAfter {
				edits = append(edits, ^comma)
			}
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			last = 'v'
		case '{', '[':
			stack = append(stack, c)
			last = c
		case ':':
			last = ':'
		default:
			// Numbers, true, false, null, and anything invalid, which the
			// decoder refuses.
			last = 'v'
		}
	}
	if len(edits) == 0 {
		return s
	}
	out := make([]byte, 0, len(s)+len(edits))
	from := 0
	for _, e := range edits {
		if e >= 0 {
			out = append(append(out, s[from:e]...), ',')
			from = e
		} else {
			out = append(out, s[from:^e]...)
			from = ^e + 1
		}
	}
	return string(append(out, s[from:]...))
}

// stringEnd returns the index just after the JSON string that starts with the
// quote at s[i], or -1 if it does not end. A quote ends it unless an odd run
// of backslashes escapes it.
func stringEnd(s string, i int) int {
	for j := i + 1; ; {
		k := strings.IndexByte(s[j:], '"')
		if k < 0 {
			return -1
		}
		q := j + k
		n := 0
		for n < q-j && s[q-1-n] == '\\' {
			n++
		}
		if n%2 == 0 {
			return q + 1
		}
		j = q + 1
	}
}

// colonAt reports whether a colon follows s[i:] after whitespace: the string
// before i was an object key.
func colonAt(s string, i int) bool {
	for ; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
		case ':':
			return true
		default:
			return false
		}
	}
	return false
}

// Numeric and boolean pm fields take a JSON value of their type or a string
// holding one, as the reference's reader does. Every numeric or boolean
// field of params is one of these types; TestParamsAreLenient checks it.

// flexUint32 is a pm field holding an unsigned 32-bit integer (a group ID).
type flexUint32 uint32

// flexUint64 is a pm field holding an unsigned 64-bit integer (a MID).
type flexUint64 uint64

// flexInt is a pm field holding a signed integer (a count such as limit).
type flexInt int

// flexBool is a pm field holding a boolean.
type flexBool bool

func (n *flexUint32) UnmarshalJSON(b []byte) error {
	v, err := unsignedField(b, 32)
	if err == nil && !isNull(b) {
		*n = flexUint32(v)
	}
	return err
}

func (n *flexUint64) UnmarshalJSON(b []byte) error {
	v, err := unsignedField(b, 64)
	if err == nil && !isNull(b) {
		*n = flexUint64(v)
	}
	return err
}

func (n *flexInt) UnmarshalJSON(b []byte) error {
	if isNull(b) {
		return nil
	}
	text, err := integerText(b)
	if err != nil {
		return err
	}
	v, err := strconv.ParseInt(text, 10, strconv.IntSize)
	if err != nil {
		return errOutOfRange
	}
	*n = flexInt(v)
	return nil
}

func (f *flexBool) UnmarshalJSON(b []byte) error {
	switch string(b) {
	case "null":
		return nil
	case "true", "1":
		*f = true
		return nil
	case "false", "0":
		*f = false
		return nil
	}
	if b[0] != '"' {
		return errors.New("not a boolean: true or false, or a string holding one")
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	// .NET's bool.TryParse: either word in any case, blanks around it.
	switch strings.ToLower(strings.Trim(s, dotnetBlanks)) {
	case "true":
		*f = true
	case "false":
		*f = false
	default:
		return errors.New("a string that is not true or false for a boolean")
	}
	return nil
}

var (
	errNotInteger = errors.New("not an integer: digits, as a JSON number or in a string")
	errOutOfRange = errors.New("integer out of range")
)

// dotnetBlanks are the blanks .NET's integer parsing allows around the digits.
const dotnetBlanks = " \t\n\v\f\r"

func isNull(b []byte) bool { return string(b) == "null" }

func unsignedField(b []byte, bits int) (uint64, error) {
	if isNull(b) {
		return 0, nil
	}
	text, err := integerText(b)
	if err != nil {
		return 0, err
	}
	text = strings.TrimPrefix(text, "+")
	if strings.HasPrefix(text, "-") {
		return 0, errOutOfRange
	}
	v, err := strconv.ParseUint(text, 10, bits)
	if err != nil {
		return 0, errOutOfRange
	}
	return v, nil
}

// integerText returns an integer pm value as an optional sign and decimal
// digits: a JSON number without fraction or exponent, or a JSON string
// holding digits with an optional sign and blanks around them (the
// reference parses "84278" and " +84278 " as 84278). A fraction is never
// rounded away: 1.5 or "1.0" for an ID is 400.
func integerText(b []byte) (string, error) {
	text := string(b)
	if b[0] == '"' {
		if err := json.Unmarshal(b, &text); err != nil {
			return "", err
		}
		text = strings.Trim(text, dotnetBlanks)
	}
	digits := strings.TrimLeft(text, "+-")
	if len(text)-len(digits) > 1 || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return "", errNotInteger
	}
	if b[0] != '"' && strings.HasPrefix(text, "+") {
		return "", errNotInteger // not JSON; the decoder refuses it before us anyway
	}
	return text, nil
}
