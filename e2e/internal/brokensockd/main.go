//go:build linux

// Command brokensockd stands in for a broken build of sockd in the package
// tests (e2e/package_test.go): `sockd run` fails at once, exit 1, as a
// binary that cannot start would, so a `sockd upgrade` to it must fail and
// leave the old sockd serving. Every other command is the real sockd's:
// it execs the binary named at build time,
//
//	go build -ldflags "-X main.real=/path/to/sockd" ./e2e/internal/brokensockd
//
// so that the package's postinst can still ask the running sockd to
// upgrade through it.
package main

import (
	"fmt"
	"os"
	"syscall"
)

var real string

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		fmt.Fprintln(os.Stderr, "sockd: this build is broken on purpose (e2e/internal/brokensockd)")
		os.Exit(1)
	}
	if real == "" {
		fmt.Fprintln(os.Stderr, "brokensockd: built without -X main.real=PATH")
		os.Exit(1)
	}
	err := syscall.Exec(real, append([]string{real}, os.Args[1:]...), os.Environ())
	fmt.Fprintf(os.Stderr, "brokensockd: exec %s: %v\n", real, err)
	os.Exit(1)
}
