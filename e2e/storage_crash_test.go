package e2e

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/storage"
)

// TestStorageCrash kills a `fluxbase serve` node with SIGKILL while 20
// uploads — 10 replacing objects, 10 new ones — are writing their bytes,
// and restarts it: every object listed downloads whole, with its
// recorded hash, as one of the versions its client sent; none of the
// new ones exists; and once collected, no bytes are left that no row
// names.
func TestStorageCrash(t *testing.T) {
	t.Parallel()
	bin := buildFluxbase(t)
	ctx := context.Background()
	dbURL := newMigratedDB(t)
	files := t.TempDir()
	base, env := serveEnv(t, dbURL, "FLUXBASE_STORAGE_LOCAL_PATH="+files)
	start := func() (*exec.Cmd, chan struct{}) { return startServe(t, bin, env, base) }
	send := func(method, path string, body io.Reader, headers ...string) (*http.Response, error) {
		return storageRequest(base, method, path, body, headers...)
	}
	mustSend := func(method, path string, body io.Reader, headers ...string) {
		t.Helper()
		mustStorage(t, base, method, path, body, headers...)
	}
	content := func(seed uint64) []byte {
		r := rand.New(rand.NewPCG(seed, 7))
		b := make([]byte, 256<<10)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	sum := func(b []byte) string { s := md5.Sum(b); return hex.EncodeToString(s[:]) }

	node, done := start()
	mustSend("POST", "/bucket", strings.NewReader(`{"id":"crash"}`), "Content-Type", "application/json")
	// accepted are the hashes each name may have after the crash.
	accepted := map[string]map[string]bool{}
	for i := range 10 {
		name := fmt.Sprintf("seed-%d", i)
		old := content(uint64(i))
		mustSend("POST", "/object/crash/"+name, strings.NewReader(string(old)), "Content-Type", "application/octet-stream")
		accepted[name] = map[string]bool{sum(old): true}
	}

	// Twenty uploads send half their bytes and hold the rest until the
	// node is dead.
	var clients sync.WaitGroup
	var writers []*io.PipeWriter
	for i := range 20 {
		name := fmt.Sprintf("seed-%d", i)
		if i >= 10 {
			name = fmt.Sprintf("new-%d", i)
		}
		body := content(uint64(100 + i))
		if i < 10 {
			accepted[name][sum(body)] = true
		}
		pr, pw := io.Pipe()
		writers = append(writers, pw)
		clients.Add(1)
		go func() {
			defer clients.Done()
			res, err := send("POST", "/object/crash/"+name, pr, "Content-Type", "application/octet-stream", "x-upsert", "true")
			if err == nil {
				res.Body.Close()
			}
			_ = pr.Close()
		}()
		clients.Add(1)
		go func() {
			defer clients.Done()
			_, _ = pw.Write(body[:len(body)/2])
		}()
	}
	temps := func() int {
		n := 0
		_ = filepath.WalkDir(files, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), ".") {
				n++
			}
			return nil
		})
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for temps() < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 20 uploads are writing", temps())
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = node.Process.Signal(syscall.SIGKILL)
	<-done
	for _, pw := range writers {
		_ = pw.CloseWithError(io.ErrClosedPipe)
	}
	clients.Wait()

	start()
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	local, err := storage.NewLocal(files)
	if err != nil {
		t.Fatal(err)
	}
	// The dead node's uploads are abandoned: collected with no age.
	collected, err := storage.NewStore(pool, local, nil).Collect(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if collected < 20 {
		t.Fatalf("collected %d versions, want the 20 unfinished uploads", collected)
	}

	rows, err := pool.Query(ctx, `select name, metadata->>'eTag' from storage.objects where bucket_id = 'crash' order by name`)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	for rows.Next() {
		var name, etag string
		if err := rows.Scan(&name, &etag); err != nil {
			t.Fatal(err)
		}
		listed[name] = strings.Trim(etag, `"`)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(listed) != 10 {
		t.Fatalf("%d objects listed, want the 10 seeded: %v", len(listed), listed)
	}
	for name, etag := range listed {
		res, err := send("GET", "/object/crash/"+name, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != 200 {
			t.Fatalf("%s: %d %v", name, res.StatusCode, err)
		}
		if got := sum(b); got != etag || !accepted[name][got] {
			t.Fatalf("%s downloads %d bytes hashing %s; recorded %s", name, len(b), got, etag)
		}
	}
	var left []string
	_ = filepath.WalkDir(files, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 10 {
		t.Fatalf("%d files after collection, want the 10 objects': %v", len(left), left)
	}
}

// serveEnv is the environment of one standalone `fluxbase serve` node on
// dbURL, on free ports and its own slot, with extra added; base is its
// URL.
func serveEnv(t *testing.T, dbURL string, extra ...string) (base string, env []string) {
	t.Helper()
	ports := make([]int, 2)
	for i := range ports {
		var err error
		if ports[i], err = pgcluster.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	base = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	env = append(os.Environ(), "DATABASE_URL="+dbURL, "FLUXBASE_JWT_SECRET="+jwtSecret,
		"FLUXBASE_HTTP_ADDR=127.0.0.1:"+strconv.Itoa(ports[0]), "FLUXBASE_DATA_DIR="+t.TempDir(),
		"FLUXBASE_NATS_PORT=-1", "FLUXBASE_CLUSTER_PORT="+strconv.Itoa(ports[1]),
		"FLUXBASE_REPLICATION_SLOT="+slotName())
	return base, append(env, extra...)
}

// startServe starts `fluxbase serve` with env and waits for base to
// answer; the node is killed when the test ends, its log shown if the
// test failed. done closes when the process has exited.
func startServe(t *testing.T, bin string, env []string, base string) (cmd *exec.Cmd, done chan struct{}) {
	t.Helper()
	cmd = exec.Command(bin, "serve")
	cmd.Env = env
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done = make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("node log:\n%s", logs.String())
		}
	})
	waitHTTP(t, base+"/health", 90*time.Second)
	return cmd, done
}

// storageRequest sends a /storage/v1 request with the service key.
func storageRequest(base, method, path string, body io.Reader, headers ...string) (*http.Response, error) {
	req, err := http.NewRequest(method, base+"/storage/v1"+path, body)
	if err != nil {
		return nil, err
	}
	service, _ := auth.APIKey(jwtSecret, auth.RoleServiceRole)
	req.Header.Set("apikey", service)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return http.DefaultClient.Do(req)
}
