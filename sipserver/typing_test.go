package sipserver

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// A typing notice is relayed as a document gchd writes from the fields it
// checked: nothing else of the sender's body reaches the others.
func TestComposingBody(t *testing.T) {
	const ns = `xmlns="urn:ietf:params:xml:ns:im-iscomposing"`
	for _, c := range []struct {
		name, body string
		code       int
		want       string // the relayed document's root element
	}{
		{"linphone", `<?xml version="1.0" encoding="UTF-8"?><isComposing ` + ns + ` xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><state>active</state><contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>`,
			0, `<isComposing ` + ns + `><state>active</state><contenttype>text/plain</contenttype><refresh>60</refresh></isComposing>`},
		{"idle with lastactive", `<isComposing ` + ns + `><state> IDLE </state><lastactive>2026-11-25T19:55:26+01:00</lastactive></isComposing>`,
			0, `<isComposing ` + ns + `><state>idle</state><lastactive>2026-11-25T18:55:26Z</lastactive></isComposing>`},
		{"no namespace", `<isComposing><state>active</state></isComposing>`, 0, `<isComposing ` + ns + `><state>active</state></isComposing>`},
		{"extra content dropped", `<isComposing ` + ns + `><state>active</state><note>visit http://spam.example</note><!-- x --></isComposing>`,
			0, `<isComposing ` + ns + `><state>active</state></isComposing>`},
		{"media type parameters", `<isComposing ` + ns + `><state>active</state><contenttype>text/plain; charset="utf-8"</contenttype></isComposing>`,
			0, `<isComposing ` + ns + `><state>active</state><contenttype>text/plain; charset=utf-8</contenttype></isComposing>`},
		{"empty", ``, 400, ""},
		{"not XML", `typing`, 400, ""},
		{"unclosed", `<isComposing ` + ns + `><state>active</state>`, 400, ""},
		{"other root", `<composing ` + ns + `><state>active</state></composing>`, 400, ""},
		{"other namespace", `<isComposing xmlns="urn:example"><state>active</state></isComposing>`, 400, ""},
		{"unknown state", `<isComposing ` + ns + `><state>shouting</state></isComposing>`, 400, ""},
		{"bad lastactive", `<isComposing ` + ns + `><state>active</state><lastactive>yesterday</lastactive></isComposing>`, 400, ""},
		{"bad contenttype", `<isComposing ` + ns + `><state>active</state><contenttype>&lt;b&gt;</contenttype></isComposing>`, 400, ""},
		{"zero refresh", `<isComposing ` + ns + `><state>active</state><refresh>0</refresh></isComposing>`, 400, ""},
		{"not UTF-8", "<isComposing " + ns + "><state>active\xff</state></isComposing>", 400, ""},
		{"too large", `<isComposing ` + ns + `><state>active</state>` + strings.Repeat(" ", maxTypingBytes) + `</isComposing>`, 413, ""},
	} {
		req := sip.NewRequest(sip.MESSAGE, sip.Uri{Scheme: "sip", User: "gc-1", Host: "example.com"})
		req.SetBody([]byte(c.body))
		got, res := composingBody(req)
		switch {
		case c.code != 0:
			if res == nil || res.StatusCode != c.code {
				t.Errorf("%s: %v, want %d", c.name, res, c.code)
			}
		case res != nil:
			t.Errorf("%s: refused %d", c.name, res.StatusCode)
		case string(got) != `<?xml version="1.0" encoding="UTF-8"?>`+"\n"+c.want+"\n":
			t.Errorf("%s: relayed\n%s\nwant\n%s", c.name, got, c.want)
		}
	}
}
