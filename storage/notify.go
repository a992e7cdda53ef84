package storage

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/lib/pq"
)

// Wake-ups between nodes travel over PostgreSQL's LISTEN/NOTIFY. They are
// hints: a notification may be lost (a listener reconnecting misses what
// was sent meanwhile), so every listener is told when it reconnected and
// catches up from the tables. On SQLite, which is for one node, there is
// no one to wake: Notify does nothing and Listen waits for its end.

// Notify sends payload on channel, outside any transaction: a NOTIFY in a
// transaction takes a lock on the whole database at its commit, which
// would serialise every commit of the cluster behind it.
func (db *DB) Notify(ctx context.Context, channel, payload string) error {
	if db.engine != Postgres {
		return nil
	}
	start := time.Now()
	_, err := db.control.ExecContext(ctx, "SELECT pg_notify($1, $2)", channel, payload)
	db.timed("notify", start, err)
	if err != nil {
		return classify(fmt.Errorf("notify %s: %w", channel, err))
	}
	return nil
}

// listenerName is the application_name of the listening session, so that
// an operator finds it in pg_stat_activity.
const listenerName = "gchd listener"

// withApplicationName sets application_name in a DSN of either form (URL
// or key=value), unless it names one already.
func withApplicationName(dsn, name string) string {
	if strings.Contains(dsn, "application_name") {
		return dsn
	}
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " application_name='" + name + "'"
}

// Notification is one wake-up received.
type Notification struct {
	Channel, Payload string
}

// Listen receives the notifications of channels until ctx is done. fn is
// called for each, one at a time; caughtUp is called once the listener is
// connected and again after each reconnection, when notifications may have
// been lost: the caller reads the tables then. Listen returns ctx's error.
func (db *DB) Listen(ctx context.Context, channels []string, fn func(Notification), caughtUp func()) error {
	if db.engine != Postgres {
		caughtUp()
		<-ctx.Done()
		return ctx.Err()
	}
	events := make(chan pq.ListenerEventType, 4)
	l := pq.NewListener(withApplicationName(db.source, listenerName), 100*time.Millisecond, 2*time.Second, func(ev pq.ListenerEventType, err error) {
		select {
		case events <- ev:
		default: // a reconnection already waits to be reported
		}
	})
	defer l.Close()
	for _, ch := range channels {
		if err := l.Listen(ch); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) {
			return fmt.Errorf("listen %s: %w", ch, err)
		}
	}
	// Ping proves the session is up, so the first catch-up reads after
	// LISTEN took effect: nothing committed later can be missed.
	for l.Ping() != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	caughtUp()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case n := <-l.Notify:
			if n == nil {
				// lib/pq sends nil after a reconnection; the event below
				// says so too, and one catch-up serves both.
				continue
			}
			fn(Notification{Channel: n.Channel, Payload: n.Extra})
		case ev := <-events:
			if ev == pq.ListenerEventReconnected {
				caughtUp()
			}
		}
	}
}
