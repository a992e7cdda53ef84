package app

import (
	"fmt"
	"testing"

	"gchd/internal/testkit"
	"gchd/storage"
)

// A post from a phone whose From has no display name is stored under the
// account's display name, as a post through the API is, not the login;
// a From with a display name keeps it.
func TestSIPPostWithoutDisplayName(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		s := startEngine(t, engine)
		s.addAccount("own", "pw-own", "")
		s.addAccount("ann", "pw-ann", "Ann Smith")
		id := groupOf(t, s, "own", "ann")
		s.must("ann", "joinGroup", map[string]any{"id": id})
		ann := newPhone(t, s, "ann", "UDP")
		ann.register()
		group := fmt.Sprintf("gc-%d", id)
		if res := ann.message(group, "no name given"); res.StatusCode != 202 {
			t.Fatalf("post: %s", res.StartLine())
		}
		req := ann.messageRequest(group, "a name given")
		req.From().DisplayName = "Annie"
		if res := ann.send(req); res.StatusCode != 202 {
			t.Fatalf("post with a name: %s", res.StartLine())
		}
		var hist struct {
			M []struct{ MB, DN, L string }
		}
		s.must("own", "getMessages", map[string]any{"id": id}).json(t, &hist)
		got := map[string]string{}
		for _, m := range hist.M {
			got[m.MB] = m.DN
		}
		if got["no name given"] != "Ann Smith" || got["a name given"] != "Annie" {
			t.Fatalf("display names stored: %q", got)
		}
	})
}
