package httpapi

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"gchd/chat"
)

// specExample is a pm of the specification (gch-api.txt), copied verbatim,
// with the method it belongs to and the fields that method requires.
type specExample struct {
	gm       string
	pm       string
	required []string
}

// specExamples are every request example of the specification, in its order.
// getCommonGroups' `{ "l": string }` is not among them: it shows the type of
// l, not a value (TestSpecPlaceholderIsRefused).
var specExamples = []specExample{
	{"addGroup", `{ "gs": "Group name", "dn": "48500100200", "gm": [ { "l" : "1000005", "dn": "48600500600" }, { "l" : "1000001", "dn": "vippie ID" } ] }`, []string{"gs"}},
	{"getGroup", `{ "id":84278 }`, []string{"id"}},
	{"delGroup", `{ "id": 100, "dn": "48500100300" }`, []string{"id"}},
	{"setGroupSubject", `{ "id": 100, "gs": "Nowy temat", "dn": "48500100300" }`, []string{"id", "gs"}},
	{"joinGroup", `{ "id": 100 "dn": "48500100200" }`, []string{"id"}},
	{"leaveGroup", `{ "id": 100 "dn": "48500100200" }`, []string{"id"}},
	{"sendMessage", `{ "id": 100 "dn": "48500100200", "mb": "message text here" }`, []string{"id", "mb"}},
	{"conf Message", `{ "id" : 100 "dn" : "48500100200", "mid": 123 }`, []string{"id", "mid"}},
	{"readMessage", `{ "id" : 100 "dn" : "48500100200", "mid": 124 }`, []string{"id", "mid"}},
	{"delMessage", `{ "id" : 100 "dn" : "48500100200", "mid": 124 }`, []string{"id", "mid"}},
	{"getMessageInfo", `{ "id" : 100 "mid": 124 }`, []string{"id", "mid"}},
	{"delMember", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, []string{"id", "gm"}},
	{"addMember", `{ "id": 100 "dn": "48500100200", "gm": [ { "l" : "1000005", "dn": "48600500600" }, { "l" : "1000001", "dn": "vippie ID" } ] }`, []string{"id", "gm"}},
	{"addAdmin", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, []string{"id", "gm"}},
	{"delAdmin", `{ "id": 100 "dn": "48500100200", "gm": ["1000002","1002142"] }`, []string{"id", "gm"}},
	{"uploadAvatar", `{ "id": 84278, "dn": "48500100200" }`, []string{"id"}},
	{"downloadAvatar", `{ "id": 84278, "t": "image", }`, []string{"id"}},
	{"delAvatar", `{ "id": 84278, "dn": "48500100200" }`, []string{"id"}},
}

// Every example of the specification decodes, to the values it shows.
func TestSpecExamplesDecode(t *testing.T) {
	table := methodTable()
	for _, ex := range specExamples {
		if _, ok := table[methodKey(ex.gm)]; !ok {
			t.Errorf("%s: no such method", ex.gm)
		}
		p, err := parse(call{pm: ex.pm}, ex.required...)
		if err != nil {
			t.Errorf("%s %s: %v", ex.gm, ex.pm, err)
			continue
		}
		if p.ID != nil && *p.ID != 100 && *p.ID != 84278 {
			t.Errorf("%s: id %d", ex.gm, *p.ID)
		}
		if p.MID != nil && *p.MID != 123 && *p.MID != 124 {
			t.Errorf("%s: mid %d", ex.gm, *p.MID)
		}
		if strings.Contains(ex.pm, `"dn"`) && !strings.HasPrefix(p.DN, "48") {
			t.Errorf("%s: dn %q", ex.gm, p.DN)
		}
		if strings.Contains(ex.pm, `"gm": [ {`) {
			inv, err := invitees(p.GM)
			if err != nil || len(inv) != 2 || inv[1] != (chat.Invitee{Login: "1000001", DisplayName: "vippie ID"}) {
				t.Errorf("%s: invitees %v, %v", ex.gm, inv, err)
			}
		} else if strings.Contains(ex.pm, `"gm": [`) {
			ls, err := logins(p.GM)
			if err != nil || !reflect.DeepEqual(ls, []string{"1000002", "1002142"}) {
				t.Errorf("%s: logins %v, %v", ex.gm, ls, err)
			}
		}
	}
}

func TestSpecPlaceholderIsRefused(t *testing.T) {
	if _, err := parse(call{pm: `{ "l": string }`}, "l"); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("getCommonGroups' placeholder: %v, want 400", err)
	}
}

// What the reference's reader accepts beyond strict JSON, and what stays
// malformed.
func TestLenientPM(t *testing.T) {
	for _, tt := range []struct {
		pm   string
		ok   bool
		want params // compared on ID, MID, DN, After, Limit where ok
	}{
		// Trailing commas, as Json.NET reads them.
		{`{"id": 7,}`, true, params{ID: u32(7)}},
		{`{"id": 7 , }`, true, params{ID: u32(7)}},
		{"{\"id\": 7,\n}", true, params{ID: u32(7)}},
		{`{"id": 7, "gm": ["a", "b",],}`, true, params{ID: u32(7)}},
		{`{"id": 7, "gm": [{"l": "a",},],}`, true, params{ID: u32(7)}},
		{`{"id": 7, "gm": [],}`, true, params{ID: u32(7)}},
		{`{"id": 7, "gm": {},}`, true, params{ID: u32(7)}},
		{`{,}`, false, params{}},
		{`{"id": 7,,}`, false, params{}},
		{`{"id": 7, "gm": [,]}`, false, params{}},
		{`{"id": 7, "gm": ["a",,"b"]}`, false, params{}},
		{`{"id": 7, "gm": [,"a"]}`, false, params{}},
		{`{"id":,}`, false, params{}},
		{`{"id": 7, "dn":}`, false, params{}},
		{`{"id" ,}`, false, params{}},
		// A comma missing between members, as in the specification.
		{`{"id": 7 "dn": "x"}`, true, params{ID: u32(7), DN: "x"}},
		{`{"id":7"dn":"x"}`, true, params{ID: u32(7), DN: "x"}},
		{`{"dn": "x" "id": 7}`, true, params{ID: u32(7), DN: "x"}},
		{`{"gm": ["a"] "id": 7}`, true, params{ID: u32(7)}},
		{`{"gm": {} "id": 7}`, true, params{ID: u32(7)}},
		{"{\"id\": 7\n\"dn\" \t: \"x\"}", true, params{ID: u32(7), DN: "x"}},
		// ... but nowhere else.
		{`{"id": 7, "gm": ["a" "b"]}`, false, params{}},
		{`{"id": 7, "mb": "a" "b"}`, false, params{}},
		{`{"id": 7 8}`, false, params{}},
		{`{"id": 7 {}}`, false, params{}},
		{`{"dn" "id": 7}`, false, params{}},
		{`{"id": 7} {"dn": "x"}`, false, params{}},
		// Commas and quotes inside strings are text.
		{`{"id": 7, "dn": "a,}"}`, true, params{ID: u32(7), DN: "a,}"}},
		{`{"id": 7, "dn": "a\",}"}`, true, params{ID: u32(7), DN: `a",}`}},
		{`{"id": 7, "dn": "a\\",}`, true, params{ID: u32(7), DN: `a\`}},
		{`{"id": 7, "dn": "x \"y\": 1"}`, true, params{ID: u32(7), DN: `x "y": 1`}},
		// Numbers as strings.
		{`{"id": "84278"}`, true, params{ID: u32(84278)}},
		{`{"id": " 84278 "}`, true, params{ID: u32(84278)}},
		{`{"id": "+84278"}`, true, params{ID: u32(84278)}},
		{`{"id": " +84278 "}`, true, params{ID: u32(84278)}},
		{`{"id": "\u000b\f\t\r\n84278"}`, true, params{ID: u32(84278)}},
		{`{"id": "084278"}`, true, params{ID: u32(84278)}},
		{`{"id": "\u0038"}`, true, params{ID: u32(8)}},
		{`{"id": "4294967295"}`, true, params{ID: u32(4294967295)}},
		{`{"id": 1, "mid": "124"}`, true, params{ID: u32(1), MID: u64(124)}},
		{`{"id": 1, "mid": "18446744073709551615"}`, true, params{ID: u32(1), MID: u64(18446744073709551615)}},
		{`{"id": 1, "after": "5", "limit": "20"}`, true, params{ID: u32(1), After: u64(5), Limit: 20}},
		{`{"id": 1, "limit": "-3"}`, true, params{ID: u32(1), Limit: -3}}, // a number; the method checks its range
		{`{"id": null}`, true, params{}},
		{`{"id": 1, "after": null, "limit": null}`, true, params{ID: u32(1)}},
		{`{"id": "12a"}`, false, params{}},
		{`{"id": "1.5"}`, false, params{}},
		{`{"id": "1e3"}`, false, params{}},
		{`{"id": "0x10"}`, false, params{}},
		{`{"id": ""}`, false, params{}},
		{`{"id": " "}`, false, params{}},
		{`{"id": "+"}`, false, params{}},
		{`{"id": "++1"}`, false, params{}},
		{`{"id": "1 2"}`, false, params{}},
		{`{"id": "-1"}`, false, params{}},
		{`{"id": "4294967296"}`, false, params{}},
		{`{"id": 1, "mid": "18446744073709551616"}`, false, params{}},
		{`{"id": 1, "limit": "1.0"}`, false, params{}},
		// JSON numbers: integers only, never rounded.
		{`{"id": 1.5}`, false, params{}},
		{`{"id": 1.0}`, false, params{}},
		{`{"id": 1e3}`, false, params{}},
		{`{"id": -1}`, false, params{}},
		{`{"id": +1}`, false, params{}},
		{`{"id": 01}`, false, params{}},
		{`{"id": 010}`, false, params{}},
		{`{"id": 0x10}`, false, params{}},
		{`{"id": 4294967296}`, false, params{}},
		{`{"id": true}`, false, params{}},
		{`{"id": [1]}`, false, params{}},
		{`{"id": {}}`, false, params{}},
		// Strings stay strings: a login or a text given as a number is refused.
		{`{"id": 1, "mb": 5}`, false, params{}},
		{`{"id": 1, "dn": 48500100200}`, false, params{}},
		{`{"id": 1, "t": 1}`, false, params{}},
		// What Json.NET also reads but no client of the specification writes.
		{`{'id': 1}`, false, params{}},
		{`{id: 1}`, false, params{}},
		{`{"id": 1 /* c */}`, false, params{}},
		// Malformed.
		{`{"id": 1`, false, params{}},
		{`{"id": 1, "dn": "x"`, false, params{}},
		{`{"id": 1, "dn": "x}`, false, params{}},
		{`{"id" 1}`, false, params{}},
		{`{"id": 1]`, false, params{}},
		{`{"id": 1,`, false, params{}},
		{`,`, false, params{}},
		{`[1,]`, false, params{}},
	} {
		p, err := parse(call{pm: tt.pm})
		if (err == nil) != tt.ok {
			t.Errorf("%s: %v, want ok %v", tt.pm, err, tt.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, chat.ErrInvalid) {
				t.Errorf("%s: %v is not ErrInvalid (400)", tt.pm, err)
			}
			continue
		}
		if !reflect.DeepEqual(p.ID, tt.want.ID) || !reflect.DeepEqual(p.MID, tt.want.MID) ||
			p.DN != tt.want.DN || deref(p.After) != deref(tt.want.After) || p.Limit != tt.want.Limit {
			t.Errorf("%s: id %v mid %v dn %q after %d limit %d, want %v %v %q %d %d", tt.pm,
				deref(p.ID), deref(p.MID), p.DN, deref(p.After), p.Limit,
				deref(tt.want.ID), deref(tt.want.MID), tt.want.DN, deref(tt.want.After), tt.want.Limit)
		}
	}
}

func TestInviteeLoginIsAString(t *testing.T) {
	p, err := parse(call{pm: `{"id": 1, "gm": [{"l": 1000005},]}`}, "gm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := invitees(p.GM); !errors.Is(err, chat.ErrInvalid) {
		t.Errorf("a login as a number: %v, want 400", err)
	}
}

func TestFlexBool(t *testing.T) {
	var v struct {
		B flexBool `json:"b"`
	}
	for _, tt := range []struct {
		pm   string
		ok   bool
		want flexBool
	}{
		{`{"b": true}`, true, true},
		{`{"b": false}`, true, false},
		{`{"b": "true"}`, true, true},
		{`{"b": "True"}`, true, true},
		{`{"b": " FALSE "}`, true, false},
		{`{"b": 1}`, true, true},
		{`{"b": 0}`, true, false},
		{`{"b": null}`, true, false},
		{`{"b": "yes"}`, false, false},
		{`{"b": "1"}`, false, false},
		{`{"b": ""}`, false, false},
		{`{"b": 2}`, false, false},
		{`{"b": 1.0}`, false, false},
		{`{"b": []}`, false, false},
	} {
		v.B = false
		err := decodePM(tt.pm, &v)
		if (err == nil) != tt.ok || (err == nil && v.B != tt.want) {
			t.Errorf("%s: %v %v, want %v ok %v", tt.pm, v.B, err, tt.want, tt.ok)
		}
	}
}

// Every number and flag of params takes the reference's forms: a field
// declared as a plain Go number or bool would refuse "84278".
func TestParamsAreLenient(t *testing.T) {
	flex := map[reflect.Type]bool{
		reflect.TypeFor[flexUint32](): true, reflect.TypeFor[flexUint64](): true,
		reflect.TypeFor[flexInt](): true, reflect.TypeFor[flexBool](): true,
	}
	pt := reflect.TypeFor[params]()
	for i := range pt.NumField() {
		f := pt.Field(i)
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch ft.Kind() {
		case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
			reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
			if !flex[ft] {
				t.Errorf("params.%s is a %s: declare it as one of flexUint32, flexUint64, flexInt, flexBool", f.Name, f.Type)
			}
		}
	}
}

func u32(v uint32) *flexUint32 { n := flexUint32(v); return &n }
func u64(v uint64) *flexUint64 { n := flexUint64(v); return &n }

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

func TestLenientJSONKeepsStrictJSON(t *testing.T) {
	for _, s := range []string{
		`{}`, `{"a":1}`, `{"a": [1, 2, {"b": "c,]"}], "d": "\\"}`, " {\n\t\"a\" : \"\\u0022,}\" } ",
	} {
		if got := lenientJSON(s); got != s {
			t.Errorf("lenientJSON(%s) = %s, want it unchanged", s, got)
		}
	}
	for in, want := range map[string]string{
		`{"a": 1,}`:        `{"a": 1}`,
		`{"a": [1,], }`:    `{"a": [1] }`,
		`{"a": 1 "b": 2}`:  `{"a": 1 ,"b": 2}`,
		`{"a": "x""b": 2}`: `{"a": "x","b": 2}`,
	} {
		if got := lenientJSON(in); got != want {
			t.Errorf("lenientJSON(%s) = %s, want %s", in, got, want)
		}
	}
}

// Strict JSON passes through unchanged, only commas ever change, a second
// pass changes nothing, and no text makes the scanner fail.
func FuzzLenientJSON(f *testing.F) {
	for _, ex := range specExamples {
		f.Add(ex.pm)
	}
	f.Add(`{"a": [1, "b\"", {"c": null}], "d": "\\"}`)
	f.Fuzz(func(t *testing.T, s string) {
		got := lenientJSON(s)
		if json.Valid([]byte(s)) && got != s {
			t.Errorf("lenientJSON(%q) = %q, want valid JSON unchanged", s, got)
		}
		if len(got) > len(s)+strings.Count(s, `"`) {
			t.Errorf("lenientJSON(%q) grew to %q", s, got)
		}
		if again := lenientJSON(got); again != got {
			t.Errorf("lenientJSON(%q) = %q, and again %q", s, got, again)
		}
		if strings.ReplaceAll(got, ",", "") != strings.ReplaceAll(s, ",", "") {
			t.Errorf("lenientJSON(%q) = %q changed more than commas", s, got)
		}
	})
}

// What the reading of a sendMessage pm costs, at the largest text: strict
// JSON, and the specification's form with a number as a string.
func BenchmarkDecodePM(b *testing.B) {
	text := strings.Repeat(`tekst, \"}] `, 16384/13)
	for name, pm := range map[string]string{
		"strict":  `{"id": 84278, "dn": "48500100200", "mb": "` + text + `"}`,
		"lenient": `{"id": "84278" "dn": "48500100200", "mb": "` + text + `",}`,
	} {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(pm)))
			for b.Loop() {
				if _, err := parse(call{pm: pm}, "id", "mb"); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/pre-pass", func(b *testing.B) {
			b.SetBytes(int64(len(pm)))
			for b.Loop() {
				lenientJSON(pm)
			}
		})
	}
}
