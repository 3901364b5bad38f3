// Package procstat samples a server's CPU time and resident memory: from
// /proc/<pid> when the process runs on this machine, or from its Prometheus
// /metrics (process_cpu_seconds_total, process_resident_memory_bytes) when
// only its URL is known. It also raises this process's open-file limit.
//
// It does not start or stop processes.
package procstat

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is a process's cumulative CPU time and current resident memory.
type Sample struct {
	At         time.Time
	CPUSeconds float64
	RSSBytes   int64
}

// Source samples one process.
type Source interface {
	Sample(ctx context.Context) (Sample, error)
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// PID samples a local process through /proc.
type PID int

// Sample reads utime+stime from /proc/<pid>/stat and VmRSS from status.
func (p PID) Sample(context.Context) (Sample, error) {
	now := time.Now()
	st, err := readStat(int(p))
	if err != nil {
		return Sample{}, err
	}
	s := Sample{At: now, CPUSeconds: st.cpu()}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", int(p)))
	if err != nil {
		return Sample{}, fmt.Errorf("read process status: %w", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			s.RSSBytes = kb * 1024
		}
	}
	return s, nil
}

// stat is what /proc/<pid>/stat says of a process's parent and CPU time,
// in clock ticks.
type stat struct {
	ppid           int
	utime, stime   float64
	cutime, cstime float64 // of the children it has waited for
}

func (s stat) cpu() float64 { return (s.utime + s.stime) / clockTicks }

func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, fmt.Errorf("read process stat: %w", err)
	}
	// The command name may hold spaces; fields start after its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("process %d: malformed stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// After ')': state is field 3 of the whole line, ppid 4, utime 14,
	// stime 15, cutime 16 and cstime 17.
	if len(f) < 15 {
		return stat{}, fmt.Errorf("process %d: short stat", pid)
	}
	var s stat
	s.ppid, _ = strconv.Atoi(f[1])
	s.utime, _ = strconv.ParseFloat(f[11], 64)
	s.stime, _ = strconv.ParseFloat(f[12], 64)
	s.cutime, _ = strconv.ParseFloat(f[13], 64)
	s.cstime, _ = strconv.ParseFloat(f[14], 64)
	return s, nil
}

// Parent is the parent process id of a local process.
func Parent(pid int) (int, error) {
	s, err := readStat(pid)
	return s.ppid, err
}

// Tree samples a local process with its children, such as a PostgreSQL
// postmaster with its backends: CPU of the process, of its live children
// and of the children it has waited for (so a backend that ended still
// counts); resident memory of the process alone, since its children share
// much of theirs with it.
type Tree int

// Sample adds the live children found in /proc to the process's own.
func (t Tree) Sample(ctx context.Context) (Sample, error) {
	s, err := PID(t).Sample(ctx)
	if err != nil {
		return Sample{}, err
	}
	root, err := readStat(int(t))
	if err != nil {
		return Sample{}, err
	}
	s.CPUSeconds += (root.cutime + root.cstime) / clockTicks
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return Sample{}, fmt.Errorf("list processes: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == int(t) {
			continue
		}
		// A child may end between the listing and the read: skip it; its
		// time moves to the parent's cutime.
		if c, err := readStat(pid); err == nil && c.ppid == int(t) {
			s.CPUSeconds += c.cpu()
		}
	}
	return s, nil
}

// Metrics samples a remote process through its Prometheus endpoint.
type Metrics struct {
	URL    string // the full /metrics URL
	Client *http.Client
}

// Sample scrapes process_cpu_seconds_total and process_resident_memory_bytes.
func (m Metrics) Sample(ctx context.Context) (Sample, error) {
	c := m.Client
	if c == nil {
		c = &http.Client{Timeout: 5 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.URL, nil)
	if err != nil {
		return Sample{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	s := Sample{At: time.Now()}
	var found int
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		switch name {
		case "process_cpu_seconds_total":
			s.CPUSeconds = v
			found++
		case "process_resident_memory_bytes":
			s.RSSBytes = int64(v)
			found++
		}
	}
	if err := sc.Err(); err != nil {
		return Sample{}, fmt.Errorf("scrape metrics: %w", err)
	}
	if found < 2 {
		return Sample{}, fmt.Errorf("scrape metrics: %s has no process_cpu_seconds_total or process_resident_memory_bytes", m.URL)
	}
	return s, nil
}

// Group samples several processes (the nodes of a cluster) as one: CPU
// seconds and memory are summed.
type Group []Source

// Sample sums every member's sample.
func (g Group) Sample(ctx context.Context) (Sample, error) {
	total := Sample{At: time.Now()}
	for _, s := range g {
		one, err := s.Sample(ctx)
		if err != nil {
			return Sample{}, err
		}
		total.CPUSeconds += one.CPUSeconds
		total.RSSBytes += one.RSSBytes
	}
	return total, nil
}

// Usage is what a process used between two samples.
type Usage struct {
	// Cores is CPU seconds per wall second: 1.0 is one core busy.
	Cores float64 `json:"cores"`
	// RSSDelta is the growth of resident memory, in bytes.
	RSSDelta int64 `json:"rss_delta_bytes"`
}

// Between compares two samples of the same source.
func Between(a, b Sample) Usage {
	u := Usage{RSSDelta: b.RSSBytes - a.RSSBytes}
	if wall := b.At.Sub(a.At).Seconds(); wall > 0 {
		u.Cores = (b.CPUSeconds - a.CPUSeconds) / wall
	}
	return u
}

// RaiseNoFile lifts the soft open-file limit to the hard one and returns
// the limits now in force.
func RaiseNoFile() (soft, hard uint64, err error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, 0, fmt.Errorf("read open-file limit: %w", err)
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return l.Cur, l.Max, fmt.Errorf("raise open-file limit: %w", err)
		}
	}
	return l.Cur, l.Max, nil
}
