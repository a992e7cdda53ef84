package sipserver

import (
	"context"
	"testing"
	"time"
)

func TestTasksStopWaits(t *testing.T) {
	ts := newTasks()
	ended := make(chan struct{})
	ts.Go(func(ctx context.Context) {
		<-ctx.Done()
		time.Sleep(10 * time.Millisecond)
		close(ended)
	})
	ts.Stop()
	select {
	case <-ended:
	default:
		t.Fatal("Stop returned before its task")
	}
	ran := false
	ts.Go(func(ctx context.Context) { ran = ctx.Err() != nil })
	if !ran {
		t.Error("a task started after Stop did not run at once with its context done")
	}
}
