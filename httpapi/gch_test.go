package httpapi

import (
	"errors"
	"testing"
	"time"

	"gchd/chat"
)

func TestMethodKey(t *testing.T) {
	table := methodTable()
	for _, tt := range []struct {
		gm, want string
	}{
		{"sendMessage", "sendMessage"},
		{"SENDMESSAGE", "sendMessage"},
		{"conf Message", "confMessage"},
		{" getGroup ", "getGroup"},
		{"get Group", "getGroup"},
		{"sendMessages", ""},
		{"", ""},
	} {
		m, ok := table[methodKey(tt.gm)]
		if got := m.name; ok != (tt.want != "") || got != tt.want {
			t.Errorf("gm %q → %q, want %q", tt.gm, got, tt.want)
		}
	}
	// Every method of the specification, and the extensions, is there.
	for _, gm := range []string{"addGroup", "getGroup", "getCommonGroups", "delGroup", "setGroupSubject", "editGroup",
		"joinGroup", "leaveGroup", "sendMessage", "confMessage", "readMessage", "delMessage", "getMessageInfo",
		"addMember", "delMember", "addAdmin", "delAdmin", "uploadAvatar", "downloadAvatar", "delAvatar",
		"getMessages", "getMyGroups"} {
		if _, ok := table[methodKey(gm)]; !ok {
			t.Errorf("%s is missing", gm)
		}
	}
}

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		pm       string
		required []string
		ok       bool
	}{
		{`{"id": 1}`, []string{"id"}, true},
		{`{"id": 4294967295}`, []string{"id"}, true},
		{`{"id": 4294967296}`, []string{"id"}, false},
		{`{"id": -1}`, []string{"id"}, false},
		{`{"id": "1"}`, []string{"id"}, true}, // as the reference reads it (pmjson_test.go)
		{`{"id": 1.0}`, []string{"id"}, false},
		{`{"mb": "x"}`, []string{"id"}, false},
		{`{"id": 1, "mb": null}`, []string{"id", "mb"}, false},
		{`{"id": 1, "gm": null}`, []string{"id", "gm"}, false},
		{`{"id": 1, "gm": []}`, []string{"id", "gm"}, true},
		{`{"id": 1, "unknown": true}`, []string{"id"}, true},
		{`{"id": 1}{}`, []string{"id"}, false},
		{`[{"id": 1}]`, []string{"id"}, false},
		{`null`, []string{"id"}, false},
		{``, []string{"id"}, false},
		{`{"id": 1`, []string{"id"}, false},
		{`{"mid": 18446744073709551615}`, []string{"mid"}, true},
	} {
		_, err := parse(call{pm: tt.pm}, tt.required...)
		if (err == nil) != tt.ok {
			t.Errorf("parse(%s, %v) = %v, want ok %v", tt.pm, tt.required, err, tt.ok)
		}
		if err != nil && !errors.Is(err, chat.ErrInvalid) {
			t.Errorf("parse(%s) error %v is not ErrInvalid (400)", tt.pm, err)
		}
	}
}

func TestTimestamp(t *testing.T) {
	if got := timestamp(time.Time{}); got != "" {
		t.Errorf("zero time = %q", got)
	}
	at := time.Date(2015, 7, 6, 10, 2, 59, 999e6, time.FixedZone("CEST", 2*3600))
	if got := timestamp(at); got != "2015-07-06T08:02:59" {
		t.Errorf("timestamp = %q, want UTC to the second", got)
	}
}
