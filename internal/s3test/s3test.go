// Package s3test runs a real S3 server for tests: versitygw with its
// posix backend over a temporary folder, on a free loopback port, as
// internal/pgtest runs PostgreSQL. The binary is installed into the
// repository's build/gobin with `go install` on first use (the Go module
// proxy is the only thing it needs) and reused after.
package s3test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/storage"
)

// Version is the versitygw release the tests run; the Makefile installs
// the same one before the tests, so their time limit is not spent on it.
const Version = "v1.8.0"

// The root credentials of every server started here.
const (
	AccessKey = "fluxbase-test"
	SecretKey = "fluxbase-test-secret"
)

// Server is one running versitygw.
type Server struct {
	Endpoint string // host:port
	cmd      *exec.Cmd
	dir      string
	done     chan error
}

// Config is an S3 configuration for the server with bucket (created by
// the backend when missing).
func (s *Server) Config(bucket string) storage.S3Config {
	return storage.S3Config{Endpoint: s.Endpoint, AccessKey: AccessKey, SecretKey: SecretKey,
		Region: "us-east-1", Bucket: bucket}
}

// Start installs versitygw when needed and starts it; Stop ends it.
func Start() (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fluxbase-s3test-")
	if err != nil {
		return nil, err
	}
	port, err := pgcluster.FreePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd := exec.Command(bin, "--access", AccessKey, "--secret", SecretKey, "--port", addr, "posix", dir)
	// Only the flags configure it: no VGW_* of the environment.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VGW_") && !strings.HasPrefix(kv, "ROOT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	logf, err := os.Create(filepath.Join(dir, ".versitygw.log"))
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	s := &Server{Endpoint: addr, cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case err := <-s.done:
			s.done <- err
			out, _ := os.ReadFile(filepath.Join(dir, ".versitygw.log"))
			_ = os.RemoveAll(dir)
			return nil, fmt.Errorf("versitygw exited: %v: %s", err, out)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("versitygw did not listen on %s", addr)
		}
	}
}

// Stop ends the server and removes its files.
func (s *Server) Stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	_ = os.RemoveAll(s.dir)
}

// binary is the path of versitygw in build/gobin, installed under a file
// lock so parallel test packages install it once.
func binary() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	gobin := filepath.Join(root, "build", "gobin")
	bin := filepath.Join(gobin, "versitygw")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(gobin, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(gobin, ".versitygw.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "go", "install", "github.com/versity/versitygw/cmd/versitygw@"+Version)
	install.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-mod=mod")
	if out, err := install.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install versitygw: %v: %s", err, out)
	}
	return bin, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("s3test: no go.mod above the working directory")
		}
		dir = parent
	}
}
