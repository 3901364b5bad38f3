// Package pgcluster runs a private PostgreSQL cluster from the machine's own
// binaries: it finds (or installs) them, creates the data directory with
// initdb, starts the postmaster as a child process with logical decoding
// enabled, and stops it again. `fluxbase dev` keeps its cluster under
// .fluxbase/postgres; the test helper in internal/pgtest makes a throwaway one
// per test package.
//
// It does not manage production databases: `fluxbase serve` only ever
// connects to DATABASE_URL.
package pgcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the bootstrap superuser of every cluster this
// package creates, whatever operating-system user runs it.
const Superuser = "postgres"

// Options configure a cluster. The zero value of each field means its default.
type Options struct {
	// Dir is the data directory; it is created with initdb when it holds no
	// cluster yet.
	Dir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one.
	Port int
	// AnyPortIfTaken lets Start pick a free port when Port is in use by
	// the time the server binds it; Cluster.Port tells which.
	AnyPortIfTaken bool
	// BinDir holds initdb and postgres; empty means FindBinDir.
	BinDir string
	// Install lets Start install postgresql-15 with apt-get when no binaries
	// are found and the process runs as root.
	Install bool
	// Ephemeral trades durability for speed (fsync off): for tests only.
	Ephemeral bool
	// Settings are extra server settings passed as -c name=value.
	Settings map[string]string
	// Log receives the server's own log output; nil discards it.
	Log io.Writer
}

// Cluster is a running postmaster owned by this process.
type Cluster struct {
	Dir  string
	Port int

	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	stopOnce sync.Once
}

// FindBinDir returns the directory of the newest PostgreSQL server binaries
// on this machine: $FLUXBASE_PG_BIN, then Debian's /usr/lib/postgresql/<v>/bin,
// then whatever pg_ctl on PATH points at.
func FindBinDir() (string, error) {
	if dir := os.Getenv("FLUXBASE_PG_BIN"); dir != "" {
		if isBinDir(dir) {
			return dir, nil
		}
		return "", fmt.Errorf("FLUXBASE_PG_BIN=%s holds no initdb and postgres", dir)
	}
	if entries, err := os.ReadDir("/usr/lib/postgresql"); err == nil {
		var versions []int
		for _, e := range entries {
			if v, err := strconv.Atoi(e.Name()); err == nil {
				versions = append(versions, v)
			}
		}
		sort.Sort(sort.Reverse(sort.IntSlice(versions)))
		for _, v := range versions {
			dir := filepath.Join("/usr/lib/postgresql", strconv.Itoa(v), "bin")
			if v >= 14 && isBinDir(dir) {
				return dir, nil
			}
		}
	}
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if dir := filepath.Dir(p); isBinDir(dir) {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries found (install postgresql-15, or set FLUXBASE_PG_BIN)")
}

func isBinDir(dir string) bool {
	for _, name := range []string{"initdb", "postgres"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.IsDir() {
			return false
		}
	}
	return true
}

// Install installs Debian's postgresql-15 with apt-get. It needs root.
func Install(ctx context.Context, log io.Writer) error {
	if os.Geteuid() != 0 {
		return errors.New("installing PostgreSQL needs root: run `apt-get install postgresql-15` yourself")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return errors.New("no apt-get on this machine: install PostgreSQL 15 or newer yourself")
	}
	if log == nil {
		log = io.Discard
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = log, log
		return cmd.Run()
	}
	if err := run("install", "-y", "-q", "postgresql-15"); err == nil {
		return nil
	}
	if err := run("update", "-q"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if err := run("install", "-y", "-q", "postgresql-15"); err != nil {
		return fmt.Errorf("apt-get install postgresql-15: %w", err)
	}
	return nil
}

// Start creates the cluster if needed, starts it and waits until it accepts
// connections. The caller must Stop it.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, dir, cred, err := opts.resolve(ctx)
	if err != nil {
		return nil, err
	}
	if err := initdb(ctx, binDir, dir, cred, opts.Log); err != nil {
		return nil, err
	}
	port := opts.Port
	for attempt := 1; ; attempt++ {
		if port == 0 {
			if port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		c, err := launch(ctx, binDir, dir, cred, port, opts)
		// A free port can be taken between the check and the server's
		// bind (by any socket's ephemeral port): take another.
		if err == nil || !errors.Is(err, errPortTaken) || (opts.Port != 0 && !opts.AnyPortIfTaken) || attempt == 3 {
			return c, err
		}
		port = 0
	}
}

// errPortTaken is a start that failed because the port was in use.
var errPortTaken = errors.New("port in use")

// launch starts the server on port and waits until it accepts connections.
func launch(ctx context.Context, binDir, dir string, cred *syscall.Credential, port int, opts Options) (*Cluster, error) {
	settings := map[string]string{
		"listen_addresses":        "127.0.0.1",
		"unix_socket_directories": dir,
		"wal_level":               "logical",
		"max_replication_slots":   "16",
		"max_wal_senders":         "16",
		"max_connections":         "200",
		"shared_buffers":          "128MB",
	}
	if opts.Ephemeral {
		settings["fsync"] = "off"
		settings["synchronous_commit"] = "off"
		settings["full_page_writes"] = "off"
	}
	for k, v := range opts.Settings {
		settings[k] = v
	}
	args := []string{"-D", dir, "-p", strconv.Itoa(port)}
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "-c", k+"="+settings[k])
	}

	cmd := exec.Command(filepath.Join(binDir, "postgres"), args...)
	cmd.Dir = dir
	out := opts.Log
	if out == nil {
		out = io.Discard
	}
	tail := NewTail(4096)
	cmd.Stdout = io.MultiWriter(out, tail)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group, so a terminal's Ctrl-C reaches only us and we
		// stop the server in order; and the kernel stops it should we die.
		Setpgid:   true,
		Pdeathsig: syscall.SIGQUIT,
	}
	if cred != nil {
		cmd.SysProcAttr.Credential = cred
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start postgres: %w", err)
	}
	c := &Cluster{Dir: dir, Port: port, cmd: cmd, exited: make(chan struct{})}
	go func() {
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	if err := c.waitReady(ctx, 60*time.Second); err != nil {
		c.Stop()
		out := strings.TrimSpace(tail.String())
		if strings.Contains(out, "Address already in use") {
			err = fmt.Errorf("%w: %w", errPortTaken, err)
		}
		return nil, fmt.Errorf("postgres did not start: %w\n%s", err, out)
	}
	return c, nil
}

// resolve finds (or installs) the binaries, the absolute data directory
// and the user the server runs as.
func (opts *Options) resolve(ctx context.Context) (binDir, dir string, cred *syscall.Credential, err error) {
	if opts.Dir == "" {
		return "", "", nil, errors.New("pgcluster: no data directory")
	}
	binDir = opts.BinDir
	if binDir == "" {
		binDir, err = FindBinDir()
		if err != nil && opts.Install {
			if ierr := Install(ctx, opts.Log); ierr != nil {
				return "", "", nil, fmt.Errorf("%v; %w", err, ierr)
			}
			binDir, err = FindBinDir()
		}
		if err != nil {
			return "", "", nil, err
		}
	}
	if dir, err = filepath.Abs(opts.Dir); err != nil {
		return "", "", nil, err
	}
	cred, err = serverCredential()
	return binDir, dir, cred, err
}

// URL is a connection string for database db as the superuser.
func (c *Cluster) URL(db string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Port)),
		Path:     "/" + db,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Exited is closed when the postmaster has exited.
func (c *Cluster) Exited() <-chan struct{} { return c.exited }

// CreateDatabase creates db unless it exists.
func (c *Cluster) CreateDatabase(ctx context.Context, db string) error {
	conn, err := pgx.Connect(ctx, c.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "select exists(select 1 from pg_database where datname = $1)", db).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	_, err = conn.Exec(ctx, "create database "+pgx.Identifier{db}.Sanitize())
	return err
}

// StartStandby makes a streaming hot standby of c in opts.Dir (which must
// not hold a cluster yet) with pg_basebackup, and starts it: a read
// replica, for tests of read routing.
func (c *Cluster) StartStandby(ctx context.Context, opts Options) (*Cluster, error) {
	binDir, dir, cred, err := opts.resolve(ctx)
	if err != nil {
		return nil, err
	}
	opts.BinDir = binDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pg_basebackup"), "-h", "127.0.0.1", "-p", strconv.Itoa(c.Port),
		"-U", Superuser, "-D", dir, "--write-recovery-conf", "--wal-method=stream", "--no-sync", "--checkpoint=fast")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	return Start(ctx, opts)
}

// Stop shuts the server down (fast shutdown, then SIGKILL after 30 s) and
// waits for it to exit. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		select {
		case <-c.exited:
			return
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-c.exited:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
			<-c.exited
		}
	})
	<-c.exited
	return nil
}

func (c *Cluster) waitReady(ctx context.Context, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var last error
	for {
		// Each attempt is short, so a server that exited is noticed even
		// when something else answers on its port.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(actx, c.URL("postgres"))
		acancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		last = err
		select {
		case <-c.exited:
			return fmt.Errorf("exited: %v", c.exitErr)
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serverCredential returns the user the server must run as: PostgreSQL
// refuses to run as root, so root runs it as the `postgres` system user.
func serverCredential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, errors.New("running as root needs a `postgres` system user to run PostgreSQL as")
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

func initdb(ctx context.Context, binDir, dir string, cred *syscall.Credential, log io.Writer) error {
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return err
		}
		if err := checkTraversable(filepath.Dir(dir)); err != nil {
			return err
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "initdb"),
		"-D", dir, "-U", Superuser, "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if log != nil {
		cmd.Stdout = io.MultiWriter(&out, log)
		cmd.Stderr = cmd.Stdout
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out.String())
	}
	return nil
}

// checkTraversable makes sure the postgres user can reach a data directory
// made by root: every parent must be searchable by others.
func checkTraversable(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the postgres user cannot enter %s (mode %v): choose a data directory it can reach", d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// PortFree reports whether port on 127.0.0.1 can be bound now.
func PortFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// Tail is an io.Writer that keeps the last bytes written to it, for error
// messages about a child process.
type Tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

// NewTail keeps the last max bytes.
func NewTail(max int) *Tail { return &Tail{max: max} }

func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *Tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
