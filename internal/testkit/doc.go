// Package testkit is what gchd's tests share: the loop that runs a test
// once per storage engine on a throw-away database of its own, the test
// logger, the configuration of a server on ephemeral ports, and starting
// a real server for the length of a test. It is support for tests (and the
// benchmark tools) only; no production package imports it (deps_test.go).
package testkit
