// Command tableflip-bench is the tableflip peer of sockd's benchmarks: the
// graceful-upgrade pattern of github.com/cloudflare/tableflip's README,
// serving the same answer as the other peers. One process serves; SIGHUP
// starts the upgrade: a new copy of the binary inherits the listening
// socket, the old one stops accepting once the new one is ready and shuts
// down with http.Server.Shutdown.
//
// It is a module of its own so that tableflip stays out of sockd's go.mod.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/cloudflare/tableflip"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	pidFile := flag.String("pid-file", "", "`path` of the pid file (written once ready)")
	flag.Parse()
	log.SetPrefix(fmt.Sprintf("tableflip-bench[%d]: ", os.Getpid()))
	log.SetFlags(0)

	upg, err := tableflip.New(tableflip.Options{PIDFile: *pidFile})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGHUP)
		for range sig {
			if err := upg.Upgrade(); err != nil {
				log.Println("upgrade failed:", err)
			}
		}
	}()

	ln, err := upg.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	pid := strconv.Itoa(os.Getpid())
	body := "hello from pid=" + pid + " worker=0 generation=1\n"
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Pid", pid)
		fmt.Fprint(w, body)
	})}
	go func() {
		if err := srv.Serve(ln); err != http.ErrServerClosed {
			log.Println("serve:", err)
		}
	}()

	if err := upg.Ready(); err != nil {
		log.Fatal(err)
	}
	<-upg.Exit()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Println("shutdown:", err)
		os.Exit(1)
	}
}
