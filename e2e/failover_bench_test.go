package e2e

import (
	"net/http"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFailover measures, on three `fluxbase serve` nodes, what a
// node's death and arrival cost: each iteration SIGKILLs the slot holder
// and times until another node holds the slot (takeover), then starts the
// killed node again on its data directory and times until its /ready
// answers 200 (restart). It reports the mean and the worst of each. Run:
//
//	go test -run '^$' -bench Failover -benchtime 5x ./e2e/
func BenchmarkFailover(b *testing.B) {
	dbURL, _ := migratedDB(b, "")
	nodes := startServeCluster(b, buildFluxbase(b), dbURL, []string{"a", "b", "c"})
	for _, n := range nodes {
		waitHTTP(b, n.url+"/ready", 2*time.Minute)
	}
	var takeovers, restarts []time.Duration
	b.ResetTimer()
	for range b.N {
		holder, _ := waitHolder(b, nodes)
		_ = holder.cmd.Process.Signal(syscall.SIGKILL)
		killed := time.Now()
		<-holder.done
		var next *serveNode
		for next == nil {
			for _, n := range nodes {
				if n != holder && metric(b, n.url, "fluxbase_replication_holder") == "1" {
					next = n
				}
			}
			if time.Since(killed) > time.Minute {
				b.Fatal("no node took the slot within a minute")
			}
			time.Sleep(10 * time.Millisecond)
		}
		takeovers = append(takeovers, time.Since(killed))

		started := time.Now()
		holder.start(b)
		for !ready(holder.url) {
			if time.Since(started) > 2*time.Minute {
				b.Fatal("the restarted node was not ready within two minutes")
			}
			time.Sleep(10 * time.Millisecond)
		}
		restarts = append(restarts, time.Since(started))
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration) {
		var sum time.Duration
		for _, d := range ds {
			sum += d
		}
		b.ReportMetric((sum / time.Duration(len(ds))).Seconds(), name+"-mean-s")
		b.ReportMetric(slices.Max(ds).Seconds(), name+"-max-s")
		b.Logf("%s: %v", name, ds)
	}
	report("takeover", takeovers)
	report("restart", restarts)
}

func ready(base string) bool {
	resp, err := http.Get(base + "/ready")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
