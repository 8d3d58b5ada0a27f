// Command loadgen sends HTTP load to one URL and prints what came back:
//
//	go run ./internal/loadgen/cmd/loadgen -url http://127.0.0.1:8080/v1/clients/demo-open/chat -c 32 -d 5s
//	go run ./internal/loadgen/cmd/loadgen -url … -H 'Authorization: Bearer TOKEN' -body '{"message":"hi"}'
//
// See package internal/loadgen for how it sends.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"github.com/llmauth/llmauth/internal/loadgen"
)

// headers is a repeatable -H flag.
type headers http.Header

func (h headers) String() string { return "" }

func (h headers) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("want NAME: VALUE, got %q", v)
	}
	http.Header(h).Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

func main() {
	cfg := loadgen.Config{Header: http.Header{}}
	flag.StringVar(&cfg.URL, "url", "", "`URL` to send to (http:// only)")
	flag.StringVar(&cfg.Method, "method", http.MethodPost, "request `METHOD`")
	body := flag.String("body", `{"message":"hello"}`, "request `BODY` (JSON unless -H sets Content-Type)")
	flag.IntVar(&cfg.Connections, "c", 32, "keep-alive `CONNECTIONS`")
	flag.DurationVar(&cfg.Duration, "d", 5*time.Second, "counted `DURATION`")
	flag.DurationVar(&cfg.Warmup, "warmup", time.Second, "uncounted warm-up `DURATION`")
	flag.Var(headers(cfg.Header), "H", "request header `NAME: VALUE` (repeatable)")
	flag.Parse()
	cfg.Body = []byte(*body)
	if cfg.URL == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	fmt.Printf("requests/s  %.0f\n", res.RequestsPerSecond())
	fmt.Printf("requests    %d in %v (%d in all, warm-up included)\n", res.Requests, res.Window, res.Total)
	statuses := make([]int, 0, len(res.ByStatus))
	for s := range res.ByStatus {
		statuses = append(statuses, s)
	}
	slices.Sort(statuses)
	for _, s := range statuses {
		fmt.Printf("status %d  %d\n", s, res.ByStatus[s])
	}
	fmt.Printf("errors      %d\n", res.Errors)
	fmt.Printf("latency     p50 %v  p90 %v  p99 %v  max %v\n", res.Latency.P50, res.Latency.P90, res.Latency.P99, res.Latency.Max)
}
