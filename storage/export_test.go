package storage

import "context"

// MarkSchemaVersionForTest records a schema version as applied, to simulate a
// database migrated by a newer binary.
func (db *DB) MarkSchemaVersionForTest(ctx context.Context, v int) error {
	_, err := db.w.ExecContext(ctx, db.sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, 'future', 0)"), v)
	return err
}

// ExecForTest runs a statement on the writer, for tests that take a schema
// back to an older version.
func (db *DB) ExecForTest(ctx context.Context, query string, args ...any) error {
	_, err := db.w.ExecContext(ctx, db.sql(query), args...)
	return err
}
