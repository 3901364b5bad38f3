package procstat

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestPIDSamplesThisProcess(t *testing.T) {
	t.Parallel()
	s, err := PID(os.Getpid()).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.RSSBytes <= 0 || s.CPUSeconds < 0 {
		t.Errorf("sample %+v", s)
	}
}

// A process tree counts its children's CPU: a child that burns CPU and
// exits moves its time to the parent's waited-for children.
func TestTreeCountsChildren(t *testing.T) {
	t.Parallel()
	before, err := Tree(os.Getpid()).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// About 0.3 s of CPU in a child (this test binary), waited for.
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSpin$")
	cmd.Env = append(os.Environ(), "PROCSTAT_SPIN=1")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	after, err := Tree(os.Getpid()).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	self, err := PID(os.Getpid()).Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := after.CPUSeconds - before.CPUSeconds; got < child.Seconds()*0.8 || after.CPUSeconds < self.CPUSeconds+child.Seconds()*0.8 {
		t.Errorf("tree CPU grew %.2f s, child used %.2f s (self %.2f, tree %.2f)", got, child.Seconds(), self.CPUSeconds, after.CPUSeconds)
	}
	if ppid, err := Parent(os.Getpid()); err != nil || ppid != os.Getppid() {
		t.Errorf("Parent = %d, %v; want %d", ppid, err, os.Getppid())
	}
}

// TestHelperSpin is the child of TestTreeCountsChildren: it burns CPU.
func TestHelperSpin(t *testing.T) {
	if os.Getenv("PROCSTAT_SPIN") == "" {
		t.Skip("the child of TestTreeCountsChildren")
	}
	x := 0
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		x++
	}
	_ = x
}

func TestMetricsScrape(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "# HELP x\nprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1.048576e+06\ngo_goroutines 7\n")
	}))
	defer srv.Close()
	s, err := Group{Metrics{URL: srv.URL}, Metrics{URL: srv.URL}}.Sample(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.CPUSeconds != 25 || s.RSSBytes != 2<<20 {
		t.Errorf("sample %+v", s)
	}
	u := Between(Sample{At: s.At.Add(-2 * time.Second), CPUSeconds: 24, RSSBytes: 1 << 20}, s)
	if u.Cores != 0.5 || u.RSSDelta != 1<<20 {
		t.Errorf("usage %+v", u)
	}
}
