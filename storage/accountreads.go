package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"gchd/registrar"
)

// accountBatchSizes are the lengths of the IN lists prepared for account
// reads: a batch is padded up to the next one, so that seven statements,
// compiled once, serve every batch.
var accountBatchSizes = [...]int{1, 2, 4, 8, 16, 32, 64}

// accountReadTimeout bounds a PostgreSQL account read that no caller can
// cancel (see readAccounts).
const accountReadTimeout = 30 * time.Second

// accountReads looks up concurrent Account calls with one query, as
// groupCommit does for writes (batcher): the first caller in the queue
// leads, takes every login queued (up to 64) and hands the lead to the
// next in line, whose batch may run while its own does (overlap).
//
// Every REGISTER that authenticates a user the registrar has not cached
// reads an account. A query for one row paid, each time, what a query
// costs whatever its size: on SQLite the read transaction's file and WAL
// locks (system calls) and database/sql's per-query work, together more
// than the B-tree search; on PostgreSQL a round trip and the backend's
// execution. Under load, when requests wait for the CPU anyway, batches
// form by themselves; an idle server reads one login per query, as before.
type accountReads = batcher[*accountRead]

type accountRead struct {
	login string
	acc   registrar.Account
	err   error
}

// Account returns the account of login, read in a batch with the other
// lookups waiting meanwhile.
func (s accountStore) Account(ctx context.Context, login string) (registrar.Account, error) {
	r := &accountRead{login: login}
	s.db.accountReads.do(r, accountBatchSizes[len(accountBatchSizes)-1], func(batch []*accountRead) {
		if err := s.readAccounts(ctx, batch); err != nil {
			for _, o := range batch {
				o.err = err
			}
		}
	})
	return r.acc, r.err
}

// readAccounts reads the accounts of a batch with one query and sets each
// read's account, or ErrNoAccount.
func (s accountStore) readAccounts(ctx context.Context, batch []*accountRead) error {
	// The leader's caller giving up must not fail the others' reads.
	ctx = context.WithoutCancel(ctx)
	if s.db.engine != SQLite {
		// A PostgreSQL read can hang on a lost connection. SQLite's is
		// left without a deadline: a read by key takes microseconds and
		// does not wait for the writer (WAL), and a context that can end
		// costs modernc a goroutine per query to watch it.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, accountReadTimeout)
		defer cancel()
	}
	size := accountBatchSizes[len(accountBatchSizes)-1]
	for _, n := range accountBatchSizes {
		if n >= len(batch) {
			size = n
			break
		}
	}
	args := make([]any, size)
	for i := range args {
		args[i] = batch[min(i, len(batch)-1)].login // padded with a login already asked for
	}
	for _, o := range batch {
		o.err = errAccountNotRead // until its row comes, if the query panics
	}
	var err error
	s.db.lanes.do(func() { err = s.scanAccounts(ctx, accountQueries[size], args, batch) })
	if err != nil {
		return classify(fmt.Errorf("select %d accounts: %w", len(batch), err))
	}
	for _, o := range batch {
		if o.err == errAccountNotRead {
			o.err = registrar.ErrNoAccount
		}
	}
	return nil
}

var errAccountNotRead = errors.New("account read did not complete")

func (s accountStore) scanAccounts(ctx context.Context, query string, args []any, batch []*accountRead) error {
	st, err := s.prepared(ctx, query)
	if err != nil {
		return err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var r accountRow
		if err := rows.Scan(&r.Login, &r.DisplayName, &r.Realm, &r.HA1MD5, &r.HA1SHA256, &r.Created, &r.Updated); err != nil {
			return err
		}
		acc := r.account()
		for _, o := range batch {
			if o.login == r.Login { // the same login may be asked for twice
				o.acc, o.err = acc, nil
			}
		}
	}
	return rows.Err()
}

// accountQueries holds the query for each batch size.
var accountQueries = func() map[int]string {
	m := make(map[int]string, len(accountBatchSizes))
	for _, n := range accountBatchSizes {
		m[n] = "SELECT " + accountColumns + " FROM accounts WHERE login IN (" + strings.TrimSuffix(strings.Repeat("?, ", n), ", ") + ")"
	}
	return m
}()
