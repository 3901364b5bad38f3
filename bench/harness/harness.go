// Package harness starts and stops what a benchmark run measures: a local
// PostgreSQL cluster (internal/pgcluster), Fluxbase nodes run from the
// fluxbase binary (built when missing), and fluxbench's own helper
// processes (the baseline server, subscriber generators). It also checks
// prerequisites and says what is missing. When the user names existing
// targets (a database URL, node URLs) it uses those and starts nothing.
//
// It measures nothing; scenarios do.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// Env is what a run may use or start. Zero fields mean "start it here".
// Everything started is stopped by Close.
type Env struct {
	// WorkDir holds the PostgreSQL cluster and node data; empty means a
	// temporary directory removed by Close.
	WorkDir string
	// DatabaseURL, when set, is used instead of a local cluster.
	DatabaseURL string
	// FluxbaseURLs, when set, are running nodes used instead of starting
	// them; APIKey is then their anon key.
	FluxbaseURLs []string
	APIKey       string
	// FluxbaseBin is the fluxbase binary; empty means build/bin/fluxbase
	// of the module, built with go build when missing.
	FluxbaseBin string
	// Self is the fluxbench executable, for helper processes; empty means
	// os.Executable.
	Self string
	// Log receives the progress of starting things; nil discards it.
	Log io.Writer

	mu        sync.Mutex
	tempDir   string
	cluster   *pgcluster.Cluster
	builtBin  string
	jwtSecret string
	closers   []func()
}

func (e *Env) logf(format string, args ...any) {
	if e.Log != nil {
		fmt.Fprintf(e.Log, format+"\n", args...)
	}
}

// dir returns the work directory, creating a temporary one on first use.
func (e *Env) dir() (string, error) {
	if e.WorkDir != "" {
		if err := os.MkdirAll(e.WorkDir, 0o755); err != nil {
			return "", fmt.Errorf("work directory: %w", err)
		}
		return filepath.Abs(e.WorkDir)
	}
	if e.tempDir == "" {
		d, err := os.MkdirTemp("", "fluxbench-")
		if err != nil {
			return "", fmt.Errorf("work directory: %w", err)
		}
		// The postgres user must reach the cluster when we run as root.
		_ = os.Chmod(d, 0o755)
		e.tempDir = d
	}
	return e.tempDir, nil
}

// Database returns the URL of a database for a scenario: name on the local
// cluster (started on first use, dropped and recreated so every run starts
// clean), or DatabaseURL when the user gave one.
func (e *Env) Database(ctx context.Context, name string) (string, error) {
	if e.DatabaseURL != "" {
		return e.DatabaseURL, nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cluster == nil {
		dir, err := e.dir()
		if err != nil {
			return "", err
		}
		e.logf("starting PostgreSQL in %s", filepath.Join(dir, "postgres"))
		c, err := pgcluster.Start(ctx, pgcluster.Options{
			Dir:      filepath.Join(dir, "postgres"),
			Settings: map[string]string{"max_connections": "300"},
		})
		if err != nil {
			return "", fmt.Errorf("start PostgreSQL: %w", err)
		}
		e.cluster = c
	}
	conn, err := pgx.Connect(ctx, e.cluster.URL("postgres"))
	if err != nil {
		return "", fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer conn.Close(context.Background())
	// A slot pins its database: drop ours before dropping the database.
	// Fluxbase's slot name is the same for every database, so the one a
	// previous scenario left on another database goes too.
	_, _ = conn.Exec(ctx, `select pg_drop_replication_slot(slot_name) from pg_replication_slots where (database = $1 or slot_name = 'fluxbase') and not active`, name)
	if _, err := conn.Exec(ctx, "drop database if exists "+pgx.Identifier{name}.Sanitize()+" with (force)"); err != nil {
		return "", fmt.Errorf("drop database %s: %w", name, err)
	}
	if err := e.cluster.CreateDatabase(ctx, name); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return e.cluster.URL(name), nil
}

// PostgresVersion asks the server at url for its version.
func PostgresVersion(ctx context.Context, url string) string {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return ""
	}
	defer conn.Close(context.Background())
	var v string
	_ = conn.QueryRow(ctx, "show server_version").Scan(&v)
	return v
}

// Close stops everything the Env started, newest first, and removes a
// temporary work directory.
func (e *Env) Close() {
	e.mu.Lock()
	closers := e.closers
	e.closers = nil
	c := e.cluster
	e.cluster = nil
	e.mu.Unlock()
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	if c != nil {
		c.Stop()
	}
	if e.tempDir != "" {
		os.RemoveAll(e.tempDir)
		e.tempDir = ""
	}
}

func (e *Env) onClose(f func()) {
	e.mu.Lock()
	e.closers = append(e.closers, f)
	e.mu.Unlock()
}

// ModuleRoot finds the fluxbase module's directory from the working
// directory upwards.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/fluxbase/fluxbase\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the fluxbase module")
		}
		dir = parent
	}
}

// Binary returns the fluxbase binary to run, building it when missing.
func (e *Env) Binary(ctx context.Context) (string, error) {
	if e.FluxbaseBin != "" {
		if _, err := os.Stat(e.FluxbaseBin); err != nil {
			return "", fmt.Errorf("fluxbase binary: %w", err)
		}
		return filepath.Abs(e.FluxbaseBin)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.builtBin != "" {
		return e.builtBin, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", fmt.Errorf("no fluxbase binary: pass -fluxbase-bin, or run inside the fluxbase module to build one (%v)", err)
	}
	bin := filepath.Join(root, "build", "bin", "fluxbase")
	if _, err := os.Stat(bin); err != nil {
		if _, lerr := exec.LookPath("go"); lerr != nil {
			return "", errors.New("no fluxbase binary at build/bin/fluxbase and no go toolchain to build it: pass -fluxbase-bin")
		}
		e.logf("building %s", bin)
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(bctx, "go", "build", "-o", bin, "./cmd/fluxbase")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("build fluxbase: %w\n%s", err, out)
		}
	}
	e.builtBin = bin
	return bin, nil
}

// Version runs `fluxbase version`.
func Version(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// Missing lists the prerequisites this machine lacks for a run that needs
// a local PostgreSQL (pg) and pg_recvlogical (recvlogical).
func Missing(pg, recvlogical bool) []string {
	var out []string
	if pg || recvlogical {
		dir, err := pgcluster.FindBinDir()
		if err != nil {
			out = append(out, "PostgreSQL server binaries: "+err.Error())
		} else if recvlogical {
			if _, err := os.Stat(filepath.Join(dir, "pg_recvlogical")); err != nil {
				out = append(out, "pg_recvlogical in "+dir)
			}
		}
	}
	return out
}

// PGBin returns the path of a PostgreSQL client program such as
// pg_recvlogical.
func PGBin(name string) (string, error) {
	dir, err := pgcluster.FindBinDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		if lp, lerr := exec.LookPath(name); lerr == nil {
			return lp, nil
		}
		return "", fmt.Errorf("%s not found in %s or on PATH", name, dir)
	}
	return p, nil
}
