//go:build unix

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/llmauth/llmauth/internal/loadgen"
)

// The load comparison's targets and scenarios.
const (
	targetBare    = "bare"
	targetExample = "example"
	targetLogged  = "example --access-log"
	targetNaive   = "naive"

	scenarioValid     = "valid token"
	scenarioAnonymous = "anonymous"

	loadOpen   = "load-open"
	loadSecure = "load-secure"
	loadBody   = `{"message":"hello"}`
)

// loadTarget is one server under load and what to send it.
type loadTarget struct {
	*server
	databaseURL string // "" for bare
	token       string // a key of loadSecure
	served      int64  // requests it answered, sanity checks included
}

// loadRun is one timed run.
type loadRun struct {
	Target, Scenario string
	Round            int
	Result           loadgen.Result
}

// loadResult is the whole comparison.
type loadResult struct {
	Targets   []string
	Scenarios []string
	Runs      []loadRun
	Stmts     []stmtCount
	Setup     []string // how the servers were set up, for the report
	DB        string
}

func runLoad(ctx context.Context, o options, pg *postgres, tmp string) (*loadResult, error) {
	bin := filepath.Join(tmp, "example")
	logf("building the example server")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, "./example").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build ./example: %w\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	res := &loadResult{DB: o.loadDB, Scenarios: []string{scenarioValid, scenarioAnonymous}}
	targets := map[string]*loadTarget{}
	defer func() {
		for _, t := range targets {
			t.stop()
			if strings.HasPrefix(t.databaseURL, "postgres") {
				pg.dropDatabase(t.databaseURL)
			}
		}
	}()

	// A database per server, so that each one's statements can be counted.
	newDB := func(name string, dialect string) (string, error) {
		if dialect == "sqlite" {
			return "sqlite:" + filepath.Join(tmp, name+".db"), nil
		}
		return pg.createDatabase(ctx, strings.ReplaceAll(name, "-", "_"))
	}
	start := func(name, dialect string, args func(db, addr string) (string, []string)) error {
		t := &loadTarget{}
		if dialect != "" {
			if t.databaseURL, err = newDB(strings.Fields(name)[0]+fmt.Sprint(len(targets)), dialect); err != nil {
				return err
			}
			if t.token, err = provision(ctx, bin, t.databaseURL); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		addr := ""
		if dialect != "" && name != targetNaive {
			if addr, err = freeAddr(); err != nil {
				return err
			}
		}
		prog, argv := args(t.databaseURL, addr)
		if t.server, err = startServer(ctx, name, filepath.Join(tmp, strings.ReplaceAll(name, " ", "_")+".log"), addr, prog, argv...); err != nil {
			return err
		}
		targets[name] = t
		res.Targets = append(res.Targets, name)
		return nil
	}
	exampleArgs := func(extra ...string) func(string, string) (string, []string) {
		return func(db, addr string) (string, []string) {
			return bin, append([]string{"serve", "--addr", addr, "--database-url", db}, extra...)
		}
	}
	if err := start(targetBare, "", func(string, string) (string, []string) {
		return self, []string{"-serve-target", "bare"}
	}); err != nil {
		return nil, err
	}
	if err := start(targetExample, o.loadDB, exampleArgs()); err != nil {
		return nil, err
	}
	if o.loggedTarget {
		if err := start(targetLogged, o.loadDB, exampleArgs("--access-log")); err != nil {
			return nil, err
		}
	}
	if err := start(targetNaive, "postgres", func(db, _ string) (string, []string) {
		return self, []string{"-serve-target", "naive", "-target-database-url", db}
	}); err != nil {
		return nil, err
	}
	res.Setup = []string{
		"go build -o $TMP/example ./example",
		"example --database-url DB clients create " + loadOpen + "; example --database-url DB clients create " + loadSecure +
			"; example --database-url DB keys create --client " + loadSecure + " --name load",
		"example serve --addr 127.0.0.1:PORT --database-url DB         # default flags; stderr goes to a file",
		"example serve --addr 127.0.0.1:PORT --database-url DB --access-log   # the same with a log line per request",
		"benchreport -serve-target bare                                 # internal/loadgen/target.Bare, no database",
		"benchreport -serve-target naive -target-database-url DB       # internal/loadgen/target.Naive, on PostgreSQL",
	}

	for _, name := range res.Targets {
		for _, sc := range res.Scenarios {
			if err := checkTarget(targets[name], name, sc); err != nil {
				return nil, err
			}
		}
	}
	before, err := countStatements(ctx, pg, targets)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	for round := range o.rounds {
		for _, sc := range res.Scenarios {
			order := slices.Clone(res.Targets)
			k := round % len(order)
			order = append(order[k:], order[:k]...) // a different first target each round
			for _, name := range order {
				t := targets[name]
				client, header := loadOpen, http.Header{}
				if sc == scenarioValid {
					client = loadSecure
					header.Set("Authorization", "Bearer "+t.token)
				}
				r, err := loadgen.Run(ctx, loadgen.Config{
					URL: t.base + "/v1/clients/" + client + "/chat", Header: header, Body: []byte(loadBody),
					Connections: o.conns, Warmup: o.warmup, Duration: o.duration,
				})
				if err != nil {
					return nil, err
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				t.served += r.Total
				res.Runs = append(res.Runs, loadRun{Target: name, Scenario: sc, Round: round, Result: r})
				logf("round %d/%d %-10s %-26s %8.0f req/s  p99 %v  statuses %v  errors %d",
					round+1, o.rounds, sc, name, r.RequestsPerSecond(), r.Latency.P99, r.ByStatus, r.Errors)
			}
		}
	}
	res.Stmts, err = statementsPerRequest(ctx, pg, targets, before, time.Since(began))
	return res, err
}

// provision creates the two clients and one key through the example CLI
// and returns the key's token.
func provision(ctx context.Context, bin, databaseURL string) (string, error) {
	run := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, bin, append(args, "--database-url", databaseURL)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("example %s: %w: %s", strings.Join(args, " "), err, stderr.String())
		}
		return strings.TrimSpace(string(out)), nil
	}
	for _, c := range []string{loadOpen, loadSecure} {
		if _, err := run("clients", "create", c); err != nil {
			return "", err
		}
	}
	return run("keys", "create", "--client", loadSecure, "--name", "load")
}

// checkTarget sends one request of a scenario and checks the answer, so
// that a run never measures refusals.
func checkTarget(t *loadTarget, name, scenario string) error {
	client := loadOpen
	req, _ := http.NewRequest(http.MethodPost, "", strings.NewReader(loadBody))
	if scenario == scenarioValid {
		client = loadSecure
		req.Header.Set("Authorization", "Bearer "+t.token)
	}
	req.URL, _ = req.URL.Parse(t.base + "/v1/clients/" + client + "/chat")
	req.Header.Set("Content-Type", "application/json")
	// The example serves decisions only once its change feed has
	// confirmed freshness; give it a few tries at start.
	var last error
	for range 50 {
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			t.served++
			var got struct {
				Client    string  `json:"client"`
				Anonymous bool    `json:"anonymous"`
				KeyID     *int64  `json:"key_id"`
				Reply     *string `json:"reply"`
			}
			_ = json.Unmarshal(body, &got)
			// The bare server decides nothing: every caller is anonymous.
			authenticated := scenario == scenarioValid && name != targetBare
			ok := res.StatusCode == http.StatusOK && got.Client == client && got.Anonymous == !authenticated &&
				(got.KeyID != nil) == authenticated && got.Reply != nil && *got.Reply == "hello"
			if ok {
				return nil
			}
			last = fmt.Errorf("%s, %s: %d %s", name, scenario, res.StatusCode, body)
		} else {
			last = err
		}
		time.Sleep(100 * time.Millisecond)
		req.Body = io.NopCloser(strings.NewReader(loadBody))
	}
	return fmt.Errorf("sanity check: %w", last)
}

// medianRun summarises a target's runs of a scenario.
type runSummary struct {
	Median, Min, Max float64 // requests per second
	P50, P99         time.Duration
	Requests, Non200 int64
	Errors           int64
}

func (r *loadResult) summary(target, scenario string) runSummary {
	var rps, p50, p99 []float64
	var s runSummary
	for _, run := range r.Runs {
		if run.Target != target || run.Scenario != scenario {
			continue
		}
		rps = append(rps, run.Result.RequestsPerSecond())
		p50 = append(p50, float64(run.Result.Latency.P50))
		p99 = append(p99, float64(run.Result.Latency.P99))
		s.Requests += run.Result.Requests
		s.Errors += run.Result.Errors
		s.Non200 += run.Result.Requests - run.Result.ByStatus[http.StatusOK]
	}
	if len(rps) == 0 {
		return s
	}
	s.Median, s.Min, s.Max = median(rps), slices.Min(rps), slices.Max(rps)
	s.P50, s.P99 = time.Duration(median(p50)), time.Duration(median(p99))
	return s
}
