package pgcluster

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A port taken between the check and the server's bind: with
// AnyPortIfTaken the cluster starts on another one, without it the start
// fails and says why.
func TestStartWhenThePortIsTaken(t *testing.T) {
	if _, err := FindBinDir(); err != nil {
		t.Skip(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	dir, err := os.MkdirTemp("", "fluxbase-pgcluster-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_ = os.Chmod(dir, 0o755) // the postgres user reaches the data directory
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := Options{Dir: filepath.Join(dir, "data"), Port: taken, Ephemeral: true}

	if c, err := Start(ctx, opts); err == nil {
		c.Stop()
		t.Fatal("started on a taken port")
	} else if !errors.Is(err, errPortTaken) {
		t.Fatalf("start on a taken port: %v", err)
	}

	opts.AnyPortIfTaken = true
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	if c.Port == taken || c.Port == 0 {
		t.Fatalf("cluster on port %d (taken: %d)", c.Port, taken)
	}
	if err := c.CreateDatabase(ctx, "app"); err != nil {
		t.Fatalf("the cluster on its new port does not answer: %v", err)
	}
}
