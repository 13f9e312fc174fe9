// Command sockd-bench runs sockd's benchmarks (scripts/bench is the one
// command that installs what they need, builds sockd and runs this), or
// the load generator (package internal/load) alone.
//
//	sockd-bench suite [--quick] [--scenarios a,b] [--peers x,y] --sockd BIN --tableflip BIN
//	sockd-bench report RESULTS.json            re-render BENCHMARKS.md and the plots
//	sockd-bench load --addr HOST:PORT [--clients 16] [--rate 0] [--duration 10s]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sockd/sockd/bench/suite"
	"github.com/sockd/sockd/internal/load"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "suite":
		err = suiteCmd(os.Args[2:])
	case "report":
		err = reportCmd(os.Args[2:])
	case "load":
		err = loadCmd(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sockd-bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: sockd-bench suite|report|load [flags] (see -h of each)")
	os.Exit(2)
}

func repoRoot() string {
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "bench/peers/node/app.js")); err == nil {
			return d
		}
	}
	return dir
}

func suiteCmd(args []string) error {
	fs := flag.NewFlagSet("suite", flag.ExitOnError)
	quick := fs.Bool("quick", false, "a smoke run of about 2 minutes (numbers not for publication)")
	mode := fs.String("mode", "", "full, quick or tiny (overrides --quick)")
	root := fs.String("root", repoRoot(), "the repository")
	sockd := fs.String("sockd", "", "the sockd binary to benchmark (required)")
	tflip := fs.String("tableflip", "", "the tableflip peer binary (bench/tableflip); empty: skip that peer")
	scen := fs.String("scenarios", "", "comma-separated subset of "+strings.Join(suite.Scenarios, ","))
	peers := fs.String("peers", "", "comma-separated subset of the peers")
	out := fs.String("out", "", "where BENCHMARKS.md goes (default: the repository for full runs, the raw directory otherwise)")
	plots := fs.String("plots", "", "where the PNG plots go (default: bench/plots for full runs, RAW/plots otherwise)")
	raw := fs.String("raw", "", "raw results and logs (default bench/results/<mode>-<time>)")
	fs.Parse(args)
	if *sockd == "" {
		return fmt.Errorf("--sockd is required")
	}
	m := suite.Full
	if *quick {
		m = suite.Quick
	}
	if *mode != "" {
		m = suite.Mode(*mode)
	}
	if *raw == "" {
		*raw = filepath.Join(*root, "bench/results", string(m)+"-"+time.Now().Format("20060102-150405"))
	}
	if *out == "" {
		*out = *raw
		if m == suite.Full {
			*out = *root
		}
	}
	if *plots == "" {
		*plots = filepath.Join(*raw, "plots")
		if m == suite.Full {
			*plots = filepath.Join(*root, "bench/plots")
		}
	}
	tools := suite.Detect(*root)
	tools.Sockd, _ = filepath.Abs(*sockd)
	if *tflip != "" {
		tools.Tableflip, _ = filepath.Abs(*tflip)
	}
	split := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(s, ",")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cmdline := "scripts/bench"
	if m == suite.Quick {
		cmdline += " --quick"
	}
	res, err := suite.Run(ctx, suite.Config{Root: *root, Mode: m, Tools: tools, Scenarios: split(*scen), Peers: split(*peers),
		RawDir: *raw, Log: os.Stderr, Command: cmdline})
	if res == nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "raw results in %s\n", *raw)
	if rerr := suite.Report(res, *out, *plots, *root, tools.Gnuplot); rerr != nil {
		return rerr
	}
	fmt.Fprintf(os.Stderr, "wrote %s and plots in %s\n", filepath.Join(*out, "BENCHMARKS.md"), *plots)
	return err
}

func reportCmd(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	root := fs.String("root", repoRoot(), "the repository")
	out := fs.String("out", "", "where BENCHMARKS.md goes (default: the repository for full results, beside RESULTS.json otherwise)")
	plots := fs.String("plots", "", "where the plots go (default: bench/plots for full results, beside RESULTS.json otherwise)")
	fs.Parse(args)
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: sockd-bench report RESULTS.json")
	}
	b, err := os.ReadFile(fs.Arg(0))
	if err != nil {
		return err
	}
	var res suite.Results
	if err := json.Unmarshal(b, &res); err != nil {
		return err
	}
	dir := filepath.Dir(fs.Arg(0))
	if *out == "" {
		*out = dir
		if res.Meta.Mode == string(suite.Full) {
			*out = *root
		}
	}
	if *plots == "" {
		*plots = filepath.Join(dir, "plots")
		if res.Meta.Mode == string(suite.Full) {
			*plots = filepath.Join(*root, "bench/plots")
		}
	}
	return suite.Report(&res, *out, *plots, *root, suite.Detect(*root).Gnuplot)
}

func loadCmd(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "HOST:PORT on loopback")
	clients := fs.Int("clients", 16, "client goroutines: half keep-alive, half a new connection per request")
	rate := fs.Float64("rate", 0, "total requests per second (0: closed loop)")
	dur := fs.Duration("duration", 10*time.Second, "how long")
	fs.Parse(args)
	if h, _, err := splitHost(*addr); err != nil || !(strings.HasPrefix(h, "127.") || h == "localhost" || h == "::1") {
		return fmt.Errorf("--addr %s: only loopback addresses", *addr)
	}
	half := (max(*clients, 2) + 1) / 2
	res := load.Start(context.Background(), load.Config{Addr: *addr, KeepAlive: half, Fresh: half, Rate: *rate, Duration: *dur}).Wait()
	st := res.Window(0, 0)
	fmt.Printf("%d requests in %s: %d ok (%.0f/s), %d failed\n", st.Requests, res.Duration.Round(time.Millisecond), st.OK, st.Throughput(), st.Failed)
	errs := res.Errors(3)
	for k := load.Kind(1); k < load.NumKinds; k++ {
		if st.ByKind[k] > 0 {
			fmt.Printf("  %-9s %d  e.g. %q\n", k, st.ByKind[k], errs[k])
		}
	}
	fmt.Printf("latency p50 %s p99 %s max %s\n", st.P50, st.P99, st.Max)
	var pids []int
	for p := range st.PerPID {
		pids = append(pids, int(p))
	}
	sort.Ints(pids)
	for _, p := range pids {
		fmt.Printf("  pid %d: %d answers (%.1f%%), %d to new connections\n", p, st.PerPID[int32(p)], 100*float64(st.PerPID[int32(p)])/float64(st.OK), st.PerPIDFresh[int32(p)])
	}
	return nil
}

func splitHost(addr string) (string, string, error) {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return "", "", fmt.Errorf("no port")
	}
	return strings.Trim(addr[:i], "[]"), addr[i+1:], nil
}
