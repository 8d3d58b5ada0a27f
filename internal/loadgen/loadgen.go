// Package loadgen is an HTTP/1.1 load generator for comparing servers on
// loopback: a fixed number of keep-alive connections, each sending the
// same request (typically a POST with a JSON body) back to back for a
// fixed duration, counting responses by status.
//
// It writes the request bytes itself and parses responses with
// net/http's reader, which costs the client far less CPU than
// http.Client's transport: on a small machine the generator shares the
// cores with the server it measures, and the less it takes, the more of a
// difference between servers shows.
//
//	res, err := loadgen.Run(ctx, loadgen.Config{
//		URL:         "http://127.0.0.1:8080/v1/clients/demo-open/chat",
//		Body:        []byte(`{"message":"hi"}`),
//		Connections: 32,
//		Duration:    5 * time.Second,
//	})
//	fmt.Println(res.RequestsPerSecond(), res.ByStatus)
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Config describes one run. URL and Duration are required.
type Config struct {
	// URL is the http:// URL every request goes to.
	URL string
	// Method is the request method. Default: POST.
	Method string
	// Header holds extra request headers (Authorization, say). Host,
	// Content-Length and, when Body is set, Content-Type
	// (application/json unless given here) are set by Run.
	Header http.Header
	// Body is the request body. Default: none.
	Body []byte
	// Connections is how many connections send requests at once, each
	// waiting for its response before the next request. Default: 16.
	Connections int
	// Warmup is how long requests are sent before counting starts.
	// Default: 0.
	Warmup time.Duration
	// Duration is how long responses are counted.
	Duration time.Duration
	// Timeout bounds one request, from its write to the end of its
	// response. Default: 10s.
	Timeout time.Duration
}

// Result is what one run counted. Only exchanges that ended within the
// counted window (after Warmup, for Duration) count, except in Total.
type Result struct {
	// Requests is the number of responses received in the window.
	Requests int64
	// ByStatus counts those responses by status code.
	ByStatus map[int]int64
	// Errors counts requests that failed in the window without a
	// response (connection refused or reset, timeout, unparsable
	// response).
	Errors int64
	// Total counts every response received, warmup included.
	Total int64
	// Window is the length of the counted window.
	Window time.Duration
	// Latency holds percentiles of the counted responses' latency.
	Latency Latency
}

// Latency summarises response times.
type Latency struct {
	P50, P90, P99, Max time.Duration
}

// RequestsPerSecond is Requests over the counted window.
func (r Result) RequestsPerSecond() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Window.Seconds()
}

// Run sends requests as cfg says until the window has passed or ctx ends,
// and returns the counts. It fails only on a bad Config; a server that
// does not answer shows in Result.Errors.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg, target, raw, err := prepare(cfg)
	if err != nil {
		return Result{}, err
	}
	start := time.Now()
	from, until := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	ctx, cancel := context.WithDeadline(ctx, until)
	defer cancel()

	workers := make([]worker, cfg.Connections)
	var wg sync.WaitGroup
	for i := range workers {
		w := &workers[i]
		w.target, w.request, w.timeout, w.from, w.until = target, raw, cfg.Timeout, from, until
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	wg.Wait()

	res := Result{ByStatus: map[int]int64{}, Window: cfg.Duration}
	var all []time.Duration
	for i := range workers {
		w := &workers[i]
		res.Requests += int64(len(w.latencies))
		res.Errors += w.errors
		res.Total += w.total
		for s, n := range w.byStatus {
			res.ByStatus[s] += n
		}
		all = append(all, w.latencies...)
	}
	// A run cut short by ctx counts over the time it had.
	if end := time.Now(); end.Before(until) {
		res.Window = max(0, end.Sub(from))
	}
	res.Latency = percentiles(all)
	return res, nil
}

// prepare fills defaults, checks cfg and serialises the request.
func prepare(cfg Config) (Config, string, []byte, error) {
	if cfg.Method == "" {
		cfg.Method = http.MethodPost
	}
	if cfg.Connections == 0 {
		cfg.Connections = 16
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	switch {
	case cfg.Connections < 0:
		return cfg, "", nil, errors.New("loadgen: negative Connections")
	case cfg.Duration <= 0:
		return cfg, "", nil, errors.New("loadgen: Duration must be positive")
	case cfg.Warmup < 0 || cfg.Timeout < 0:
		return cfg, "", nil, errors.New("loadgen: negative Warmup or Timeout")
	}
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return cfg, "", nil, fmt.Errorf("loadgen: %w", err)
	}
	if u.Scheme != "http" || u.Host == "" {
		return cfg, "", nil, fmt.Errorf("loadgen: want an http:// URL with a host, got %q", cfg.URL)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "80")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", cfg.Method, u.RequestURI(), u.Host)
	h := cfg.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Del("Host")
	h.Set("Content-Length", strconv.Itoa(len(cfg.Body)))
	if len(cfg.Body) > 0 && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	if err := h.Write(&b); err != nil {
		return cfg, "", nil, fmt.Errorf("loadgen: %w", err)
	}
	b.WriteString("\r\n")
	b.Write(cfg.Body)
	return cfg, target, b.Bytes(), nil
}

// worker is one connection's loop and its own counts, merged at the end.
type worker struct {
	target      string
	request     []byte
	timeout     time.Duration
	from, until time.Time

	mu        sync.Mutex // guards conn against the window's end
	conn      net.Conn
	br        *bufio.Reader
	latencies []time.Duration
	byStatus  map[int]int64
	errors    int64
	total     int64
}

func (w *worker) run(ctx context.Context) {
	w.byStatus = map[int]int64{}
	defer w.closeConn()
	stop := context.AfterFunc(ctx, func() {
		// Unblock a request in flight when the window ends.
		if c := w.currentConn(); c != nil {
			_ = c.SetDeadline(time.Now())
		}
	})
	defer stop()
	for ctx.Err() == nil {
		begin := time.Now()
		status, err := w.exchange(ctx)
		end := time.Now()
		counted := !end.Before(w.from) && end.Before(w.until)
		switch {
		case err != nil:
			w.closeConn()
			if counted && ctx.Err() == nil {
				w.errors++
			}
			if ctx.Err() == nil {
				// Do not spin on a server that refuses connections.
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		default:
			w.total++
			if counted {
				w.byStatus[status]++
				w.latencies = append(w.latencies, end.Sub(begin))
			}
		}
	}
}

func (w *worker) currentConn() net.Conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.conn
}

func (w *worker) setConn(c net.Conn) {
	w.mu.Lock()
	w.conn = c
	w.mu.Unlock()
}

func (w *worker) closeConn() {
	if c := w.currentConn(); c != nil {
		_ = c.Close()
		w.setConn(nil)
	}
}

// exchange sends one request and reads its whole response, dialling
// first when the connection is closed.
func (w *worker) exchange(ctx context.Context) (int, error) {
	if w.currentConn() == nil {
		d := net.Dialer{Timeout: w.timeout}
		c, err := d.DialContext(ctx, "tcp", w.target)
		if err != nil {
			return 0, err
		}
		w.setConn(c)
		if w.br == nil {
			w.br = bufio.NewReaderSize(c, 16<<10)
		} else {
			w.br.Reset(c)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
	}
	c := w.currentConn()
	if err := c.SetDeadline(time.Now().Add(w.timeout)); err != nil {
		return 0, err
	}
	if _, err := c.Write(w.request); err != nil {
		return 0, err
	}
	res, err := http.ReadResponse(w.br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if err != nil {
		return 0, err
	}
	if res.Close {
		w.closeConn()
	}
	return res.StatusCode, nil
}

// percentiles sorts d and picks the usual points.
func percentiles(d []time.Duration) Latency {
	if len(d) == 0 {
		return Latency{}
	}
	slices.Sort(d)
	at := func(q float64) time.Duration { return d[min(len(d)-1, int(q*float64(len(d))))] }
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: d[len(d)-1]}
}
