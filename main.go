// Command gchd is a SIP-native group chat server. See README.md.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"gchd/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code := app.Main(ctx, os.Args[1:], app.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, os.Getenv)
	stop()
	os.Exit(code)
}
