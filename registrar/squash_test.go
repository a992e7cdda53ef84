package registrar

import "testing"

// The last write of a binding in a batch wins, in the order the writes
// were queued: a removal queued after a put (a phone unregistering right
// after a refresh was queued) must not come back.
func TestSquashKeepsQueueOrder(t *testing.T) {
	a1 := Binding{AOR: "alice", URI: "sip:a@192.0.2.1", CSeq: 1}
	a2 := a1
	a2.CSeq = 2
	ref := BindingRef{"alice", a1.Key()}
	tests := []struct {
		name    string
		batch   []write
		wantPut []uint32 // CSeqs
		wantDel int
	}{
		{"put, then removal", []write{{put: []Binding{a1}}, {del: []BindingRef{ref}}}, nil, 1},
		{"removal, then put", []write{{del: []BindingRef{ref}}, {put: []Binding{a1}}}, []uint32{1}, 0},
		{"two puts", []write{{put: []Binding{a1}}, {put: []Binding{a2}}}, []uint32{2}, 0},
		{"put, removal, put", []write{{put: []Binding{a2}}, {del: []BindingRef{ref}}, {put: []Binding{a1}}}, []uint32{1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			put, del := squash(tt.batch)
			var got []uint32
			for _, p := range put {
				got = append(got, p.CSeq)
			}
			if len(got) != len(tt.wantPut) || (len(got) == 1 && got[0] != tt.wantPut[0]) || len(del) != tt.wantDel {
				t.Fatalf("put %v del %v, want put %v and %d removals", got, del, tt.wantPut, tt.wantDel)
			}
		})
	}
}
