package storage

import (
	"database/sql"
	"errors"
	"testing"
)

// Only a SELECT that locks nothing leaves an update with nothing to undo.
func TestPlainRead(t *testing.T) {
	for _, c := range []struct {
		query string
		want  bool
	}{
		{"SELECT id FROM chat_groups WHERE id = ?", true},
		{"\n\t\tSELECT m.group_id FROM members m WHERE m.group_id = ?", true},
		{"SELECT " + groupColumns + " FROM chat_groups WHERE id = ? FOR UPDATE", false},
		{"SELECT id FROM chat_groups WHERE id = ? FOR NO KEY UPDATE", false},
		{"SELECT id FROM chat_groups WHERE id = ? FOR SHARE", false},
		{"SELECT id FROM chat_groups WHERE id = ? FOR KEY SHARE", false},
		{"SELECT pg_advisory_xact_lock(?, hashtext(?))", false},
		{"WITH e AS (INSERT INTO events DEFAULT VALUES RETURNING mid) SELECT mid FROM e", false},
		{"INSERT INTO members (group_id) VALUES (?)", false},
		{"UPDATE members SET read_mid = ?", false},
		{"DELETE FROM chat_groups WHERE id = ?", false},
		{"SAVEPOINT chat_update", false},
	} {
		if got := plainRead(c.query); got != c.want {
			t.Errorf("plainRead(%q) = %v, want %v", c.query, got, c.want)
		}
	}
}

// A read that finds no row is no failure; anything else the database
// answers is, and the first one is kept.
func TestEffectsNote(t *testing.T) {
	var e effects
	first := errors.New("first")
	e.note("SELECT 1", sql.ErrNoRows)
	if e.wrote || e.failed != nil {
		t.Fatalf("after a read of no row: %+v", e)
	}
	e.note("SELECT 1", first)
	e.note("UPDATE x SET y = 1", errors.New("second"))
	if !e.wrote || e.failed != first {
		t.Fatalf("after two failures and a write: %+v", e)
	}
	var none *effects
	if err := none.note("UPDATE x SET y = 1", first); err != first {
		t.Fatalf("untracked note returned %v", err)
	}
}
