package procstat

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
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
