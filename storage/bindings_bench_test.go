package storage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/registrar"
)

// BenchmarkSaveBindings writes new bindings in batches of 16, as the
// registrar's writer does under a burst of registrations; ns/op is per
// binding. go test -run - -bench SaveBindings ./storage
func BenchmarkSaveBindings(b *testing.B) {
	for _, e := range testkit.Engines() {
		b.Run(string(e), func(b *testing.B) {
			db := testkit.Open(b, e)
			s := db.BindingStore()
			ctx := context.Background()
			now := time.Now()
			const batch = 16
			put := make([]registrar.Binding, batch)
			b.ResetTimer()
			for n := 0; n < b.N; n += batch {
				for i := range put {
					u := fmt.Sprintf("user%07d", n+i)
					put[i] = registrar.Binding{AOR: u, URI: "sip:" + u + "@192.0.2.10:5062;transport=udp", Expires: now.Add(time.Hour),
						CallID: u + "-call@192.0.2.10", CSeq: 2, Transport: "UDP", Source: "192.0.2.10:5062", Node: "gchd",
						UserAgent: "bench", Updated: now}
				}
				if err := s.SaveBindings(ctx, put, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
