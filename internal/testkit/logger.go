package testkit

import (
	"log/slog"
	"os"
)

// Logger logs to stderr at debug level when GCHD_TEST_LOG is set, else
// nowhere: a passing run stays quiet, a failing one can be rerun loud.
func Logger() *slog.Logger {
	if os.Getenv("GCHD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
