package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// nodeFDLimit is the open-file limit of the node under attack: low enough
// that the test's few thousand websockets would exhaust it.
const nodeFDLimit = 1024

// A flood of websockets cannot take a node down: a `fluxbase serve` node
// with 1,024 descriptors gets 3,000 websocket attempts; those over its
// connection cap are refused before the upgrade with 503 and Retry-After,
// REST keeps answering new clients, the change log keeps taking writes
// (an insert reaches a subscriber) during the flood and after it, and the
// node needs no restart.
func TestWebsocketFloodKeepsNodeServing(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh to lower the node's open-file limit with")
	}
	ctx := context.Background()
	bin := buildFluxbase(t)
	dbURL := pgtest.NewDB(t)
	if err := migrate(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, `create table public.e2e_ping (id serial primary key);
		create table public.flood (id serial primary key, v text);`); err != nil {
		t.Fatal(err)
	}
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = pgcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	url := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	// ulimit lowers both the soft and the hard limit, so the Go runtime
	// cannot raise it again.
	cmd := exec.Command("sh", "-c", "ulimit -n "+strconv.Itoa(nodeFDLimit)+" && exec \"$0\" serve", bin)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		"FLUXBASE_JWT_SECRET="+jwtSecret,
		"FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(ports[0]),
		"FLUXBASE_DATA_DIR="+t.TempDir(),
		"FLUXBASE_NODE_NAME=flood",
		"FLUXBASE_NATS_PORT=-1",
		"FLUXBASE_CLUSTER_PORT="+strconv.Itoa(ports[1]),
		"FLUXBASE_REPLICATION_SLOT="+slotName(),
	)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("node log (tail):\n%s", logs.tail(60))
		}
	})
	waitHTTP(t, url+"/health", 90*time.Second)
	pid := cmd.Process.Pid

	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	anon, _ := auth.APIKey(jwtSecret, auth.RoleAnon)
	n := &solo{url: url, db: pool, anon: anon}
	n.waitReplicating(t)
	sub := dial(t, url, service)
	sub.mustJoin("realtime:flood", changes("flood"), "")
	sub.heartbeat()
	next := 0
	// delivered inserts a row and waits for the subscriber to receive it.
	delivered := func(c *client, when string) {
		t.Helper()
		next++
		id := next
		if _, err := pool.Exec(ctx, `insert into public.flood (id, v) values ($1, $2)`, id, when); err != nil {
			t.Fatalf("insert %s: %v", when, err)
		}
		m, err := c.recvUntil(30*time.Second, func(m *msg) bool { return isChange(m) && record(m)["id"] == float64(id) })
		if err != nil || m == nil {
			t.Fatalf("the change written %s did not reach the subscriber: %v", when, err)
		}
	}
	delivered(sub, "before the flood")

	// The flood: attempts from many goroutines, each kept open when
	// accepted.
	const attempts = 3000
	var (
		mu       sync.Mutex
		held     []*websocket.Conn
		accepted atomic.Int64
		refused  atomic.Int64 // 503 or 429 with Retry-After
		failed   atomic.Int64
		firstErr atomic.Value
	)
	dialer := websocket.Dialer{HandshakeTimeout: 60 * time.Second}
	wsURL := "ws" + strings.TrimPrefix(url, "http") + "/realtime/v1/websocket?vsn=2.0.0&apikey=" + anon
	var wg sync.WaitGroup
	var nextAttempt atomic.Int64
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for nextAttempt.Add(1) <= attempts {
				ws, resp, err := dialer.Dial(wsURL, nil)
				switch {
				case err == nil:
					accepted.Add(1)
					mu.Lock()
					held = append(held, ws)
					mu.Unlock()
				case resp != nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests) && resp.Header.Get("Retry-After") != "":
					refused.Add(1)
				default:
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%v (response %v)", err, statusOf(resp)))
				}
			}
		}()
	}
	// Throughout the flood, REST answers new clients.
	stopProbe := make(chan struct{})
	var probes sync.WaitGroup
	var probeOK, probeFailed atomic.Int64
	var probeErr atomic.Value
	probes.Add(1)
	go func() {
		defer probes.Done()
		for {
			if err := restGet(url, service); err != nil {
				probeFailed.Add(1)
				probeErr.CompareAndSwap(nil, err.Error())
			} else {
				probeOK.Add(1)
			}
			select {
			case <-stopProbe:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	wg.Wait()
	close(stopProbe)
	probes.Wait()
	t.Logf("flood of %d: %d accepted, %d refused, %d failed (first failure: %v); node has %d descriptors open; REST during it: %d answered, %d failed",
		attempts, accepted.Load(), refused.Load(), failed.Load(), firstErr.Load(), openFiles(pid), probeOK.Load(), probeFailed.Load())
	if probeOK.Load() == 0 || probeFailed.Load() > 0 {
		t.Errorf("REST during the flood: %d answered, %d failed (first: %v)", probeOK.Load(), probeFailed.Load(), probeErr.Load())
	}
	restOK := func(when string) {
		t.Helper()
		if err := restGet(url, service); err != nil {
			t.Fatalf("REST %s: %v", when, err)
		}
	}
	restOK("with the flood's connections held")
	delivered(sub, "with the flood's connections held")
	if failed.Load() > 0 {
		t.Errorf("%d attempts failed otherwise than by a refusal with Retry-After; first: %v", failed.Load(), firstErr.Load())
	}
	if accepted.Load() == 0 || refused.Load() == 0 {
		t.Errorf("%d accepted and %d refused: want both", accepted.Load(), refused.Load())
	}
	if open := openFiles(pid); open >= nodeFDLimit {
		t.Errorf("node holds %d descriptors, its limit is %d", open, nodeFDLimit)
	}

	// The clients leave; the node serves on without a restart.
	mu.Lock()
	for _, ws := range held {
		ws.Close()
	}
	mu.Unlock()
	restOK("after the flood")
	after := dial(t, url, service)
	after.mustJoin("realtime:flood", changes("flood"), "")
	after.heartbeat()
	delivered(after, "after the flood")
	delivered(sub, "after the flood, to the first subscriber")
	select {
	case <-done:
		t.Fatal("the node exited")
	default:
	}
	if strings.Contains(logs.String(), "too many open files") {
		t.Errorf("the node ran out of descriptors:\n%s", logs.grep("too many open files", 5))
	}
}

// heartbeat keeps c from the node's idle timeout until the test ends; c
// must send nothing else meanwhile.
func (c *client) heartbeat() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ref := 1; ; ref++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Second):
			}
			if c.trySend([]any{nil, fmt.Sprintf("hb-%d", ref), "phoenix", "heartbeat", map[string]any{}}) != nil {
				return
			}
		}
	}()
	c.t.Cleanup(func() { close(stop); <-done })
}

// restGet reads the flood table through REST on a connection of its own.
func restGet(url, key string) error {
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodGet, url+"/rest/v1/flood?select=id&limit=1", nil)
	req.Header.Set("apikey", key)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return "none"
	}
	return resp.Status
}

// openFiles counts the descriptors process pid holds, or -1.
func openFiles(pid int) int {
	ents, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "fd"))
	if err != nil {
		return -1
	}
	return len(ents)
}

// buildFluxbase builds the fluxbase binary into the test's folder.
func buildFluxbase(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fluxbase")
	build := exec.Command("go", "build", "-o", bin, "../cmd/fluxbase")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build fluxbase: %v\n%s", err, out)
	}
	return bin
}

// syncBuffer is a process's output, written by exec's copying goroutines
// and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) lines() []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func (b *syncBuffer) tail(n int) string {
	l := b.lines()
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

func (b *syncBuffer) grep(s string, n int) string {
	var out []string
	for _, l := range b.lines() {
		if strings.Contains(l, s) {
			out = append(out, l)
			if len(out) == n {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
