package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/fluxbase/fluxbase/internal/pgtest"
)

// procKB reads a field of /proc/<pid>/status ("VmRSS", "VmHWM") in KiB.
func procKB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// zeros is an endless reader of zero bytes that allocates nothing.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestStorageMemory sends 1 GiB up through a `fluxbase serve` node and
// back down: the node's peak resident memory rises by less than 64 MiB,
// so neither direction holds the object.
func TestStorageMemory(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("the kernel cannot reset a process's peak memory")
	}
	bin := buildFluxbase(t)
	dbURL := newMigratedDB(t)
	base, env := serveEnv(t, dbURL, "FLUXBASE_STORAGE_LOCAL_PATH="+t.TempDir())
	cmd, _ := startServe(t, bin, env, base)
	pid := cmd.Process.Pid
	mustStorage(t, base, "POST", "/bucket", strings.NewReader(`{"id":"big"}`), "Content-Type", "application/json")
	mustStorage(t, base, "POST", "/object/big/warm-up", strings.NewReader("warm"), "Content-Type", "text/plain")
	// Peak memory from here on ("5" resets VmHWM to the current RSS).
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the node's peak memory: %v", err)
	}
	before := procKB(t, pid, "VmRSS")
	const size = 1 << 30
	mustStorage(t, base, "POST", "/object/big/gigabyte", io.LimitReader(zeros{}, size), "Content-Type", "application/octet-stream")
	res, err := storageRequest(base, "GET", "/object/big/gigabyte", nil)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if err != nil || n != size {
		t.Fatalf("downloaded %d bytes (%v), want %d", n, err, size)
	}
	peak := procKB(t, pid, "VmHWM")
	t.Logf("RSS %d KiB before, peak %d KiB while moving 1 GiB each way", before, peak)
	if rise := peak - before; rise >= 64<<10 {
		t.Fatalf("peak RSS rose by %d KiB moving 1 GiB: the node holds the object", rise)
	}
}

// newMigratedDB is a fresh, migrated database.
func newMigratedDB(t *testing.T) string {
	t.Helper()
	dbURL := pgtest.NewDB(t)
	if err := migrate(context.Background(), dbURL); err != nil {
		t.Fatal(err)
	}
	return dbURL
}

// mustStorage sends a /storage/v1 request with the service key and fails
// the test unless it answers 200.
func mustStorage(t *testing.T, base, method, path string, body io.Reader, headers ...string) {
	t.Helper()
	res, err := storageRequest(base, method, path, body, headers...)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, b)
	}
}
