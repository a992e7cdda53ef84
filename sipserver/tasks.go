package sipserver

import (
	"context"
	"sync"
)

// tasks owns the goroutines a part starts off a request's path (branch
// watchers, CANCELs, copies, command answers): Stop ends their context and
// waits for them.
type tasks struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	wg     sync.WaitGroup
	done   bool
}

func newTasks() *tasks {
	t := &tasks{}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t
}

// Go runs fn in a goroutine that Stop waits for. After Stop, fn runs at
// once in the caller with a context already done, so that whatever waits
// for its outcome is told.
func (t *tasks) Go(fn func(ctx context.Context)) {
	t.mu.Lock()
	if t.done {
		t.mu.Unlock()
		fn(t.ctx)
		return
	}
	t.wg.Add(1)
	t.mu.Unlock()
	go func() {
		defer t.wg.Done()
		fn(t.ctx)
	}()
}

// Stop cancels every task and waits for them to return.
func (t *tasks) Stop() {
	t.mu.Lock()
	t.done = true
	t.mu.Unlock()
	t.cancel()
	t.wg.Wait()
}
