package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/sockd/sockd/internal/control"
	"github.com/sockd/sockd/pool"
)

const signalHelp = "Sends SIGNAL (USR1, HUP, TERM…, or a number) to the workers — each with what it started (its\n" +
	"process group, its cgroup) — and not to sockd: to reopen logs, or make an app re-read its own\n" +
	"configuration without a reload. Workers sockd is stopping are left alone. Prints how many got it.\n"

const sendHelp = "Writes MESSAGE (one JSON value) on the workers' Node.js IPC channel: a Node worker gets it with\n" +
	"process.on('message'), as from cluster's worker.send. With --topic it is wrapped the way PM2's\n" +
	"sendDataToProcessId sends it: {\"type\":\"process:msg\",\"topic\":TOPIC,\"data\":MESSAGE}. Workers have\n" +
	"the channel with --ready node-ipc or node-listen. Prints how many it was written to.\n"

// tellCommand is `sockd signal SIGNAL` and `sockd send MESSAGE`.
func tellCommand(name string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockd "+name, flag.ContinueOnError)
	tgt := addTarget(fs)
	slot := fs.Int("worker", -1, "only the worker in slot `N`")
	gen := fs.Int("generation", -1, "only the workers of generation `G`")
	topic := ""
	synopsis, help := "sockd signal [--worker N] [--generation G] [--control PATH|--pid PID] SIGNAL", signalHelp
	if name == "send" {
		fs.StringVar(&topic, "topic", "", "wrap the message as PM2 does, with this `topic`")
		synopsis, help = "sockd send [--worker N] [--generation G] [--topic T] [--control PATH|--pid PID] MESSAGE", sendHelp
	}
	fs.Usage = usageFunc(fs, synopsis, help)
	arg, args := scaleArg(args, "control", "pid", "worker", "generation", "topic")
	if err := parseFlags(fs, args, getenv, stdout); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if arg == "" || fs.NArg() > 0 {
		return usagef("sockd %s: want one %s (see sockd %s --help)", name, map[string]string{"signal": "signal", "send": "message"}[name], name)
	}
	req := control.Request{Command: name}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["worker"] {
		if *slot < 0 {
			return usagef("sockd %s: --worker %d: want a slot, 0 or more", name, *slot)
		}
		req.Slot = slot
	}
	if set["generation"] {
		if *gen < 1 {
			return usagef("sockd %s: --generation %d: want a generation, 1 or more", name, *gen)
		}
		req.Generation = gen
	}
	if name == "signal" {
		if _, err := pool.ParseSignal(arg); err != nil {
			return usagef("sockd signal: %v", err)
		}
		req.Signal = arg
	} else {
		if !json.Valid([]byte(arg)) {
			return usagef("sockd send: the message must be one JSON value, like '{\"action\":\"flush\"}' or '\"ping\"'")
		}
		req.Message = json.RawMessage(arg)
		if topic != "" {
			b, _ := json.Marshal(struct {
				Type  string          `json:"type"`
				Topic string          `json:"topic"`
				Data  json.RawMessage `json:"data"`
			}{"process:msg", topic, req.Message})
			req.Message = b
		}
	}
	path, err := tgt.path()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, defaultClientTimeout)
	defer cancel()
	resp, err := control.CallChecked(ctx, path, req, tgt.check)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%d\n", resp.Workers)
	return nil
}
