package storage

import (
	"testing"

	"gchd/registrar"
)

// The last change of a binding in a batch wins, in the order the changes
// were queued: a removal queued after a put (a phone unregistering right
// after a refresh was queued) must not come back.
func TestSquashKeepsQueueOrder(t *testing.T) {
	a1 := registrar.Binding{AOR: "alice", URI: "sip:a@192.0.2.1", CSeq: 1}
	a2 := a1
	a2.CSeq = 2
	ref := registrar.BindingRef{AOR: "alice", Key: a1.Key()}
	put := func(b registrar.Binding) *bindingWrite { return &bindingWrite{put: []registrar.Binding{b}} }
	del := func() *bindingWrite { return &bindingWrite{del: []registrar.BindingRef{ref}} }
	tests := []struct {
		name    string
		batch   []*bindingWrite
		wantPut []uint32 // CSeqs
		wantDel int
	}{
		{"put, then removal", []*bindingWrite{put(a1), del()}, nil, 1},
		{"removal, then put", []*bindingWrite{del(), put(a1)}, []uint32{1}, 0},
		{"two puts", []*bindingWrite{put(a1), put(a2)}, []uint32{2}, 0},
		{"put, removal, put", []*bindingWrite{put(a2), del(), put(a1)}, []uint32{1}, 0},
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
