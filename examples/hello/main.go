// Command hello is the demo HTTP worker, the same one sockd embeds as a
// hidden subcommand: run it under sockd (or systemd socket activation) and
// every response tells which process, slot and generation served it:
//
//	hello from pid=<pid> worker=<slot> generation=<gen>
//
// with headers X-Sockd-Pid, X-Sockd-Worker and X-Sockd-Generation. It binds
// no port itself: the sockets come as LISTEN_FDS. It sends READY=1 once it
// accepts, and on SIGTERM drains carefully (package worker) and exits 0.
//
// Flags, each also read from the environment so a unit can set it:
//
//	--config FILE       HELLO_CONFIG: a file containing the word "broken"
//	                    makes it fail before READY (simulates a bad deploy)
//	--delay D           HELLO_DELAY: artificial latency of every request
//	--drain-timeout D   HELLO_DRAIN_TIMEOUT: longest drain on SIGTERM
package main

import (
	"os"

	"github.com/sockd/sockd/internal/demo"
)

func main() { os.Exit(demo.Main(os.Args[1:], os.Stdout, os.Stderr)) }
