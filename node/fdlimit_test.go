package node

import (
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestFDBudget(t *testing.T) {
	t.Parallel()
	tests := []struct {
		limit, reserve, max  int
		http, ws, gotReserve int
		clamped              bool
	}{
		{limit: 20000, http: 19488, ws: 18976, gotReserve: 1024},
		{limit: 1024, http: 896, ws: 768, gotReserve: 256},
		{limit: 1024, reserve: 512, http: 768, ws: 512, gotReserve: 512},
		{limit: 20000, max: 5000, http: 19488, ws: 5000, gotReserve: 1024},
		{limit: 1024, max: 5000, http: 896, ws: 768, gotReserve: 256, clamped: true},
	}
	for _, tt := range tests {
		b, clamped, err := fdBudget(tt.limit, tt.reserve, tt.max)
		if err != nil {
			t.Fatalf("%+v: %v", tt, err)
		}
		if b.HTTPConns != tt.http || b.Websockets != tt.ws || b.Reserve != tt.gotReserve || clamped != tt.clamped {
			t.Errorf("fdBudget(%d, %d, %d) = %+v, clamped %v; want http %d, websockets %d, reserve %d, clamped %v",
				tt.limit, tt.reserve, tt.max, b, clamped, tt.http, tt.ws, tt.gotReserve, tt.clamped)
		}
	}
	for _, bad := range [][2]int{{1024, 1000}, {1024, 10}, {100, 0}} {
		_, _, err := fdBudget(bad[0], bad[1], 0)
		var ce *configError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "FLUXBASE_FD_RESERVE") {
			t.Errorf("fdBudget(%d, %d): %v, want an error naming FLUXBASE_FD_RESERVE", bad[0], bad[1], err)
		}
	}
}

// The listener holds at most its limit of connections; the next waits
// in the backlog until one closes, then is accepted.
func TestLimitListener(t *testing.T) {
	t.Parallel()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := newLimitListener(inner, 2)
	defer ln.Close()
	accepted := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	for range 3 {
		c, err := net.Dial("tcp", inner.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first, second := <-accepted, <-accepted
	select {
	case c := <-accepted:
		t.Fatalf("a third connection was accepted over the limit: %v", c.RemoteAddr())
	case <-time.After(200 * time.Millisecond):
	}
	if ln.Open() != 2 {
		t.Fatalf("open %d, want 2", ln.Open())
	}
	// Realtime's writers write to the socket's descriptor directly.
	sc, ok := first.(syscall.Conn)
	if !ok {
		t.Fatal("an accepted connection hides its descriptor")
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	if err := raw.Control(func(d uintptr) { fd = int(d) }); err != nil || fd < 0 {
		t.Fatalf("descriptor %d, %v", fd, err)
	}
	first.Close()
	first.Close() // a second close gives back nothing more
	third := <-accepted
	if ln.Open() != 2 {
		t.Fatalf("open %d after a close and an accept, want 2", ln.Open())
	}
	second.Close()
	third.Close()
	if ln.Open() != 0 {
		t.Fatalf("open %d after every close, want 0", ln.Open())
	}
	ln.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("Accept went on after Close")
	}
}
