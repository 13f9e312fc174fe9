package worker

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary run as a worker instead of the tests:
// "careful" serves with ServeHTTP, "naive" with http.Server.Shutdown.
const helperEnv = "WORKER_TEST_HELPER"

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

func helperHandler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("X-Sockd-Pid", fmt.Sprint(os.Getpid()))
	fmt.Fprintf(w, "ok pid=%d\n", os.Getpid())
}

func helperMain(mode string) int {
	logger := log.New(os.Stderr, fmt.Sprintf("helper %d: ", os.Getpid()), 0)
	ls, err := Listeners()
	if err != nil {
		logger.Print(err)
		return 2
	}
	srv := &http.Server{Handler: http.HandlerFunc(helperHandler)}
	if mode == "naive" {
		return naiveMain(srv, ls, logger)
	}
	opts := Options{Logger: logger, DrainTimeout: 20 * time.Second}
	if err := ServeHTTP(context.Background(), srv, ls, opts); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}

// naiveMain is what most Go servers do: Serve, then Shutdown on SIGTERM.
func naiveMain(srv *http.Server, ls []net.Listener, logger *log.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	for _, l := range ls {
		go srv.Serve(l)
	}
	Ready()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Print(err)
		return 1
	}
	return 0
}
