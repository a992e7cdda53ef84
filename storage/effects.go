package storage

import (
	"database/sql"
	"errors"
	"strings"
)

// effects is what the statements of one update did to its transaction.
type effects struct {
	// wrote: a statement other than a plain read ran (or was tried): a
	// write, a lock, or anything not known to be neither.
	wrote bool
	// failed is the first error the database answered; on PostgreSQL
	// it aborts the whole transaction. A read that finds no row is no
	// failure.
	failed error
}

// note records query's outcome and returns err.
func (e *effects) note(query string, err error) error {
	if e == nil {
		return err
	}
	if !plainRead(query) {
		e.wrote = true
	}
	if err != nil && e.failed == nil && !errors.Is(err, sql.ErrNoRows) {
		e.failed = err
	}
	return err
}

// plainRead reports whether query only reads: a SELECT that locks no row.
// A CTE (WITH) counts as a write, since it may hold one. The package
// writes its SQL keywords in capitals, so the locking clauses are looked
// for as such: this runs for every statement of a batch.
func plainRead(query string) bool {
	q := strings.TrimLeft(query, " \t\n")
	if !strings.HasPrefix(q, "SELECT") {
		return false
	}
	for _, lock := range []string{" FOR UPDATE", " FOR NO KEY UPDATE", " FOR SHARE", " FOR KEY SHARE", "pg_advisory"} {
		if strings.Contains(q, lock) {
			return false
		}
	}
	return true
}
