// Command httpcounter is a tiny HTTP server that counts the requests it has served,
// in memory, and answers each with the new count ("N\n"). After a migration the
// next answer must be one more than the last before it.
//
//	httpcounter [-port N]
//
// It prints "listening <addr>" once the socket is bound (-port 0 picks a free port).
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// counter answers every request with the number of requests served so far.
type counter struct{ n atomic.Uint64 }

func (c *counter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n := c.n.Add(1)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "%d\n", n)
}

func main() {
	port := flag.Int("port", 8080, "TCP port to listen on (0: any free port)")
	mptcp := flag.Bool("mptcp", false, "listen with MPTCP (which CRIU cannot dump: for tests of failing checkpoints)")
	flag.Parse()
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// Plain TCP unless asked: Go listens with MPTCP where the kernel has it, and
	// CRIU cannot dump MPTCP sockets ("Unsupported proto 262").
	var lc net.ListenConfig
	lc.SetMultipathTCP(*mptcp)
	ln, err := lc.Listen(context.Background(), "tcp", net.JoinHostPort("", strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "httpcounter:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", ln.Addr())
	srv := &http.Server{Handler: &counter{}, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, "httpcounter:", err)
		os.Exit(1)
	}
}
