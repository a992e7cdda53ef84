package storage

import "sync"

// lanes runs SQLite calls on a few long-lived goroutines. modernc's SQLite
// is C translated to Go and needs tens of kilobytes of stack; a SIP
// request's goroutine starts small, so without lanes every account read
// would first grow (copy) its caller's stack, which cost more than the
// read itself.
type lanes struct {
	work chan laneJob
	stop chan struct{}
	wg   sync.WaitGroup
}

type laneJob struct {
	fn   func()
	done chan any // the panic of fn, if any; closed when fn returns
}

func (j laneJob) run() {
	defer func() {
		if p := recover(); p != nil {
			j.done <- p
		}
		close(j.done)
	}()
	j.fn()
}

func startLanes(n int) *lanes {
	l := &lanes{work: make(chan laneJob), stop: make(chan struct{})}
	for range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for {
				select {
				case j := <-l.work:
					j.run()
				case <-l.stop:
					return
				}
			}
		}()
	}
	return l
}

// do runs fn on a lane, waiting for one to be free. It does not run fn in
// place when every lane is busy: under load the lanes are rarely parked
// in their receive (they are runnable, queued behind request goroutines),
// and running in place grew a request's stack for most reads. So fn must
// not call do itself: it would wait for its own lane. A panic in fn is
// raised again in the caller. A nil or closed *lanes runs fn in place.
func (l *lanes) do(fn func()) {
	if l == nil {
		fn()
		return
	}
	j := laneJob{fn: fn, done: make(chan any, 1)}
	select {
	case l.work <- j:
	case <-l.stop:
		fn()
		return
	}
	if p, panicked := <-j.done; panicked {
		panic(p)
	}
}

func (l *lanes) close() {
	if l != nil {
		close(l.stop)
		l.wg.Wait()
	}
}
