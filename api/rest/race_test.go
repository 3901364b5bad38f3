//go:build race

package rest

// raceEnabled: the race detector makes sync.Pool drop a share of what is
// put back, so pooled buffers are allocated again.
const raceEnabled = true
