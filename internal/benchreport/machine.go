//go:build unix

package main

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers "sqlite", for its version
)

// machine says where the figures were measured.
type machine struct {
	CPU        string
	Cores      int
	OS         string
	Go         string
	Postgres   string
	SQLite     string
	Date       time.Time
	Code       string // the commit measured
	LoadBefore string // load average when the run started
	LoadAfter  string
}

func describeMachine(ctx context.Context, pg *postgres) machine {
	m := machine{Cores: runtime.NumCPU(), Date: time.Now().UTC(), LoadBefore: loadAverage(), CPU: "unknown", OS: runtime.GOOS}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		_ = f.Close()
	}
	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.OS += ", Linux " + strings.TrimSpace(string(b))
	}
	m.OS += " (" + runtime.GOOS + "/" + runtime.GOARCH + ")"
	m.Go = runtime.Version()
	if out, err := exec.CommandContext(ctx, "go", "version").Output(); err == nil {
		m.Go = strings.TrimSpace(string(out))
	}
	m.Code = codeVersion(ctx)
	m.Postgres = pg.version(ctx)
	m.SQLite = "unknown"
	if db, err := sql.Open("sqlite", ":memory:"); err == nil {
		var v string
		if db.QueryRowContext(ctx, `SELECT sqlite_version()`).Scan(&v) == nil {
			m.SQLite = "SQLite " + v + " (modernc.org/sqlite, pure Go)"
		}
		_ = db.Close()
	}
	return m
}

// loadAverage is the 1, 5 and 15 minute load averages, "" when unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// codeVersion names the commit measured and what differs from it.
func codeVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown (not a git checkout)"
	}
	v := "commit " + strings.TrimSpace(string(out))
	st, err := exec.CommandContext(ctx, "git", "status", "--porcelain").Output()
	if err != nil {
		return v
	}
	var changed []string
	for line := range strings.SplitSeq(strings.TrimRight(string(st), "\n"), "\n") {
		if len(line) > 3 {
			changed = append(changed, "`"+line[3:]+"`")
		}
	}
	switch {
	case len(changed) == 0:
	case len(changed) <= 8:
		v += ", plus uncommitted " + strings.Join(changed, ", ")
	default:
		v += fmt.Sprintf(", plus %d uncommitted files and folders", len(changed))
	}
	return v
}
