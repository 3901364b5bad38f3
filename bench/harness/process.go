package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// Process is a child process that fluxbench owns: it dies with fluxbench
// (SIGKILL on parent death) and is stopped with SIGTERM, then SIGKILL.
type Process struct {
	Name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan []byte // stdout, line by line; closed at EOF
	tail  *pgcluster.Tail
	done  chan struct{}
	err   error
	once  sync.Once
}

// Start runs name with args and env (nil: inherit). Its stdout is read line
// by line (Lines); stderr is kept for error messages.
func Start(name string, env []string, args ...string) (*Process, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &Process{Name: name, cmd: cmd, lines: make(chan []byte, 64), tail: pgcluster.NewTail(8192), done: make(chan struct{})}
	cmd.Stderr = p.tail
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64*1024), 256<<20)
		for sc.Scan() {
			p.lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the child's process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Lines delivers the child's stdout lines; it is closed when the child
// closes its stdout. The caller must keep reading it, or the child blocks.
func (p *Process) Lines() <-chan []byte { return p.lines }

// Send writes v as one JSON line to the child's stdin.
func (p *Process) Send(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := p.stdin.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("write to %s: %w", p.Name, err)
	}
	return nil
}

// Stderr is the end of what the child wrote to stderr.
func (p *Process) Stderr() string { return p.tail.String() }

// Exited is closed once the child has exited and its stdout is drained.
func (p *Process) Exited() <-chan struct{} { return p.done }

// Stop closes stdin, sends SIGTERM, and SIGKILL after grace; it waits for
// the exit. Safe to call more than once.
func (p *Process) Stop(grace time.Duration) error {
	p.once.Do(func() {
		p.stdin.Close()
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		// Keep draining stdout so the child can exit.
		for {
			select {
			case _, ok := <-p.lines:
				if !ok {
					<-p.done
					return
				}
			case <-t.C:
				_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
				for range p.lines {
				}
				<-p.done
				return
			}
		}
	})
	<-p.done
	var ee *exec.ExitError
	if errors.As(p.err, &ee) && ee.Sys().(syscall.WaitStatus).Signaled() {
		return nil // stopped by us
	}
	return p.err
}

// WaitLine returns the next stdout line, or an error when the child exits
// or ctx ends first.
func (p *Process) WaitLine(ctx context.Context) ([]byte, error) {
	select {
	case l, ok := <-p.lines:
		if !ok {
			<-p.done
			return nil, fmt.Errorf("%s exited (%v): %s", p.Name, p.err, p.Stderr())
		}
		return l, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// SelfPath returns the fluxbench executable.
func (e *Env) SelfPath() (string, error) {
	if e.Self != "" {
		return e.Self, nil
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find fluxbench executable: %w", err)
	}
	return p, nil
}
