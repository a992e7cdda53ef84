package sipserver

import (
	"strings"
	"testing"

	"gchd/chat"
)

func TestCommand(t *testing.T) {
	for _, c := range []struct {
		text, cmd, arg string
		ok             bool
	}{
		{"#join", "#join", "", true},
		{"  #JOIN \r\n", "#join", "", true},
		{"#leave", "#leave", "", true},
		{"#members", "#members", "", true},
		{"#help", "#help", "", true},
		{"#subject  Friday lunch ", "#subject", "Friday lunch", true},
		{"#subject", "#subject", "", true},
		{"#join now", "", "", false}, // text after a command: a post
		{"#hashtag", "", "", false},
		{"hello #join", "", "", false},
		{"", "", "", false},
	} {
		cmd, arg, ok := command(c.text)
		if cmd != c.cmd && ok || arg != c.arg || ok != c.ok {
			t.Errorf("command(%q) = %q %q %v, want %q %q %v", c.text, cmd, arg, ok, c.cmd, c.arg, c.ok)
		}
	}
}

func TestMembersText(t *testing.T) {
	v := chat.GroupView{Group: chat.Group{Subject: "Lunch", Owner: "alice"}, Members: []chat.Member{
		{Login: "alice", DisplayName: "Alice", Status: chat.StatusJoined, Admin: true},
		{Login: "bob", DisplayName: "Bob", Status: chat.StatusWaiting},
		{Login: "carol", DisplayName: "Carol", Status: chat.StatusLeft},
	}}
	got := membersText(v)
	want := "Lunch:\nAlice (alice) joined, admin, owner\nBob (bob) invited"
	if got != want {
		t.Errorf("membersText = %q, want %q", got, want)
	}
	if strings.Contains(got, "carol") {
		t.Error("a member who left is listed")
	}
}
