// Command wsflood floods a node with websocket attempts, as an anonymous
// attacker would, and checks that the node keeps serving: REST answers new
// clients, inserts through REST reach a subscriber through the change
// log, during the flood and after its connections leave. The attempts are
// made by worker processes of its own (each opens its share, so no
// process needs more descriptors than its limit) and held open until the
// end of the flood; it prints a Markdown report.
//
//	go run ./bench/wsflood -url http://127.0.0.1:8080 -anon $FLUXBASE_ANON_KEY \
//	  -service $FLUXBASE_SERVICE_KEY -table flood -attempts 20000 -procs 4
//
// The table needs an integer primary key "id" and a text column "v", and
// must be published (every table of public is, by default).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	var (
		url      = flag.String("url", "http://127.0.0.1:8080", "the node's base URL")
		anon     = flag.String("anon", os.Getenv("FLUXBASE_ANON_KEY"), "anon key, for the flood")
		service  = flag.String("service", os.Getenv("FLUXBASE_SERVICE_KEY"), "service key, for REST and the subscriber")
		table    = flag.String("table", "flood", "table of public to read, insert into and subscribe to")
		attempts = flag.Int("attempts", 20000, "websocket attempts in all")
		procs    = flag.Int("procs", 4, "worker processes sharing the attempts")
		parallel = flag.Int("parallel", 100, "attempts at once per worker")
		hold     = flag.Duration("hold", 15*time.Second, "how long the flood's connections stay open after the last attempt")
		after    = flag.Duration("after", 10*time.Second, "how long to go on probing after they left")
		worker   = flag.Int("worker", 0, "run as a worker making this many attempts (internal)")
	)
	flag.Parse()
	if *worker > 0 {
		runWorker(*url, *anon, *worker, *parallel)
		return
	}
	if err := run(*url, *anon, *service, *table, *attempts, *procs, *parallel, *hold, *after); err != nil {
		fmt.Fprintln(os.Stderr, "wsflood:", err)
		os.Exit(1)
	}
}

// counts is what a worker reports once its attempts are made.
type counts struct {
	Accepted, Refused, Failed int
	FirstFailure              string
	RetryAfter                string
}

// runWorker makes n attempts, n at most parallel at once, reports its
// counts on stdout, holds the accepted connections until stdin closes.
func runWorker(url, anon string, n, parallel int) {
	dialer := websocket.Dialer{HandshakeTimeout: 60 * time.Second}
	ws := "ws" + strings.TrimPrefix(url, "http") + "/realtime/v1/websocket?vsn=2.0.0&apikey=" + anon
	var (
		mu   sync.Mutex
		held []*websocket.Conn
		c    counts
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				conn, resp, err := dialer.Dial(ws, nil)
				mu.Lock()
				switch {
				case err == nil:
					c.Accepted++
					held = append(held, conn)
				case resp != nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests):
					c.Refused++
					c.RetryAfter = resp.Header.Get("Retry-After")
				default:
					c.Failed++
					if c.FirstFailure == "" {
						c.FirstFailure = err.Error()
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	_ = json.NewEncoder(os.Stdout).Encode(c)
	// Held, answering the node's pings, until the parent says so.
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, conn := range held {
		conn.Close()
	}
}

// probe is a running tally of REST reads, inserts and their deliveries.
type probe struct {
	restOK, restFailed     atomic.Int64
	insertOK, insertFailed atomic.Int64
	firstErr               atomic.Value
}

func (p *probe) fail(err error) { p.firstErr.CompareAndSwap(nil, err.Error()) }

func run(url, anon, service, table string, attempts, procs, parallel int, hold, after time.Duration) error {
	client := func() *http.Client {
		return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	}
	rest := func(method, path string, body []byte) (int, error) {
		req, _ := http.NewRequest(method, url+"/rest/v1/"+path, bytes.NewReader(body))
		req.Header.Set("apikey", service)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client().Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	sub, err := subscribe(url, service, table)
	if err != nil {
		return fmt.Errorf("subscribe before the flood: %w", err)
	}
	defer sub.close()
	var nextID atomic.Int64
	nextID.Store(time.Now().UnixNano() / 1e6 % 1e9 * 1000)
	// tick reads once and inserts once, recording what answered.
	tick := func(p *probe) {
		if st, err := rest(http.MethodGet, table+"?select=id&limit=1", nil); err != nil || st != http.StatusOK {
			p.restFailed.Add(1)
			p.fail(fmt.Errorf("REST read: %v (status %d)", err, st))
		} else {
			p.restOK.Add(1)
		}
		id := nextID.Add(1)
		body, _ := json.Marshal(map[string]any{"id": id, "v": "flood"})
		if st, err := rest(http.MethodPost, table, body); err != nil || st != http.StatusCreated {
			p.insertFailed.Add(1)
			p.fail(fmt.Errorf("REST insert: %v (status %d)", err, st))
		} else {
			p.insertOK.Add(1)
		}
	}
	runProbe := func(p *probe, stop <-chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				tick(p)
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
			}
		}()
		return &wg
	}

	during := &probe{}
	stopDuring := make(chan struct{})
	duringDone := runProbe(during, stopDuring)
	start := time.Now()
	var workers []*exec.Cmd
	var stdins []io.WriteCloser
	results := make(chan counts, procs)
	for i := range procs {
		share := attempts / procs
		if i < attempts%procs {
			share++
		}
		cmd := exec.Command(os.Args[0], "-url", url, "-anon", anon, "-worker", fmt.Sprint(share), "-parallel", fmt.Sprint(parallel))
		cmd.Stderr = os.Stderr
		in, _ := cmd.StdinPipe()
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start worker: %w", err)
		}
		workers, stdins = append(workers, cmd), append(stdins, in)
		go func() {
			var c counts
			if err := json.NewDecoder(bufio.NewReader(out)).Decode(&c); err != nil {
				c.Failed, c.FirstFailure = share, "worker: "+err.Error()
			}
			results <- c
			_, _ = io.Copy(io.Discard, out)
		}()
	}
	var total counts
	for range procs {
		c := <-results
		total.Accepted += c.Accepted
		total.Refused += c.Refused
		total.Failed += c.Failed
		if total.FirstFailure == "" {
			total.FirstFailure = c.FirstFailure
		}
		if c.RetryAfter != "" {
			total.RetryAfter = c.RetryAfter
		}
	}
	attemptsTook := time.Since(start)
	time.Sleep(hold)
	close(stopDuring)
	duringDone.Wait()
	deliveredDuring := sub.seen.Load()
	for _, in := range stdins {
		in.Close()
	}
	for _, w := range workers {
		_ = w.Wait()
	}

	// After the flood: a new subscriber, and the first one, get new
	// inserts; REST answers.
	sub2, err := subscribe(url, service, table)
	if err != nil {
		return fmt.Errorf("subscribe after the flood: %w", err)
	}
	defer sub2.close()
	afterP := &probe{}
	stopAfter := make(chan struct{})
	afterDone := runProbe(afterP, stopAfter)
	time.Sleep(after)
	close(stopAfter)
	afterDone.Wait()
	time.Sleep(2 * time.Second) // the last inserts' deliveries
	fmt.Printf(`| | count |
|---|---|
| websocket attempts | %d (in %v, from %d worker processes) |
| accepted (upgraded) | %d |
| refused (503 with Retry-After: %s) | %d |
| failed otherwise | %d %s |
| REST reads during the flood (new connection each) | %d answered 200, %d failed |
| REST inserts during the flood | %d answered 201, %d failed |
| inserts delivered to the subscriber joined before the flood, by its end | %d |
| REST reads after the clients left | %d answered 200, %d failed |
| REST inserts after | %d answered 201, %d failed |
| inserts delivered after: to the first subscriber / to one joined after | %d / %d |
`, attempts, attemptsTook.Round(100*time.Millisecond), procs, total.Accepted, total.RetryAfter, total.Refused, total.Failed, total.FirstFailure,
		during.restOK.Load(), during.restFailed.Load(), during.insertOK.Load(), during.insertFailed.Load(), deliveredDuring,
		afterP.restOK.Load(), afterP.restFailed.Load(), afterP.insertOK.Load(), afterP.insertFailed.Load(),
		sub.seen.Load()-deliveredDuring, sub2.seen.Load())
	if e := during.firstErr.Load(); e != nil {
		fmt.Printf("\nfirst probe failure during the flood: %v\n", e)
	}
	if e := afterP.firstErr.Load(); e != nil {
		fmt.Printf("\nfirst probe failure after the flood: %v\n", e)
	}
	return nil
}

// subscriber counts the inserts of a table it receives.
type subscriber struct {
	ws   *websocket.Conn
	seen atomic.Int64
	wg   sync.WaitGroup
	stop chan struct{}
}

func subscribe(url, key, table string) (*subscriber, error) {
	u := "ws" + strings.TrimPrefix(url, "http") + "/realtime/v1/websocket?vsn=2.0.0&apikey=" + key
	ws, _, err := websocket.DefaultDialer.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	join := []any{"1", "1", "realtime:flood-probe", "phx_join", map[string]any{"config": map[string]any{
		"postgres_changes": []any{map[string]any{"event": "INSERT", "schema": "public", "table": table}}}}}
	if err := ws.WriteJSON(join); err != nil {
		ws.Close()
		return nil, err
	}
	// Wait for the join's reply, so inserts made next are not missed.
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		_, data, err := ws.ReadMessage()
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("join: %w", err)
		}
		if bytes.Contains(data, []byte(`"phx_reply"`)) {
			if !bytes.Contains(data, []byte(`"status":"ok"`)) {
				ws.Close()
				return nil, fmt.Errorf("join refused: %s", data)
			}
			break
		}
	}
	_ = ws.SetReadDeadline(time.Time{})
	s := &subscriber{ws: ws, stop: make(chan struct{})}
	var writeMu sync.Mutex
	s.wg.Add(2)
	go func() { // reader
		defer s.wg.Done()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			var frame []json.RawMessage
			if json.Unmarshal(data, &frame) == nil && len(frame) == 5 && string(frame[3]) == `"postgres_changes"` {
				s.seen.Add(1)
			}
		}
	}()
	go func() { // heartbeats, past the node's idle timeout
		defer s.wg.Done()
		for ref := 2; ; ref++ {
			select {
			case <-s.stop:
				return
			case <-time.After(20 * time.Second):
			}
			writeMu.Lock()
			err := ws.WriteJSON([]any{nil, fmt.Sprint(ref), "phoenix", "heartbeat", map[string]any{}})
			writeMu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return s, nil
}

func (s *subscriber) close() {
	close(s.stop)
	s.ws.Close()
	s.wg.Wait()
}
