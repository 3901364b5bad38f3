package bench

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a run happened, so numbers are read with their
// hardware next to them.
type Machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	GoVersion   string `json:"go_version"`
	// Open-file limit of the load generator (soft/hard after raising).
	NoFile string `json:"nofile,omitempty"`
	// LoadAvg is the 1, 5 and 15 minute load average when the run began:
	// other work on a shared machine skews the numbers.
	LoadAvg string `json:"load_average,omitempty"`
	// BusyBefore is the share of all cores other processes kept busy in
	// the half second before the run began (from /proc/stat).
	BusyBefore float64 `json:"cpu_busy_before"`
	// Versions of what was measured, filled in by scenarios.
	PostgreSQL string `json:"postgresql,omitempty"`
	Fluxbase   string `json:"fluxbase,omitempty"`
}

// DescribeMachine reads the processor, memory and kernel from /proc.
func DescribeMachine() Machine {
	m := Machine{
		Cores:     runtime.NumCPU(),
		OS:        runtime.GOOS + "/" + runtime.GOARCH,
		GoVersion: runtime.Version(),
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				m.MemoryBytes = kb * 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if a, ok := cpuTimes(); ok {
		time.Sleep(500 * time.Millisecond)
		if b, ok := cpuTimes(); ok && b[1] > a[1] {
			m.BusyBefore = 1 - float64(b[0]-a[0])/float64(b[1]-a[1])
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// cpuTimes returns the idle (idle+iowait) and total jiffies of all CPUs.
func cpuTimes() ([2]uint64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return [2]uint64{}, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return [2]uint64{}, false
	}
	var t [2]uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		t[1] += n
		if i == 3 || i == 4 {
			t[0] += n
		}
	}
	return t, true
}

// Busy returns a warning when other processes kept more than a quarter of
// the cores busy just before the run: they competed with the measurement.
func (m Machine) Busy() string {
	if m.BusyBefore <= 0.25 {
		return ""
	}
	return fmt.Sprintf("Other processes kept %.0f%% of the %d cores busy just before the run began (load average %s): "+
		"throughput may be lower and latency higher than on an idle machine.", 100*m.BusyBefore, m.Cores, m.LoadAvg)
}
