// Package mailpit runs a real SMTP server for tests: mailpit, installed
// once into the repository's ignored build/gobin by `go install`, on free
// loopback ports, with its HTTP API to read what it received.
package mailpit

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxbase/fluxbase/internal/pgcluster"
)

// Version is the mailpit release the tests use.
const Version = "v1.33.1"

var (
	installOnce sync.Once
	binary      string
	installErr  error
)

// bin returns mailpit's path, installing it on first use.
func bin() (string, error) {
	installOnce.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			installErr = fmt.Errorf("go env GOMOD: %w", err)
			return
		}
		gobin := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "build", "gobin")
		binary = filepath.Join(gobin, "mailpit")
		if _, err := os.Stat(binary); err == nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/axllent/mailpit@"+Version)
		cmd.Env = append(os.Environ(), "GOBIN="+gobin)
		if out, err := cmd.CombinedOutput(); err != nil {
			installErr = fmt.Errorf("go install mailpit: %w\n%s", err, out)
		}
	})
	return binary, installErr
}

// Server is one running mailpit.
type Server struct {
	SMTPPort int
	api      string
}

// Start runs mailpit until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	path, err := bin()
	if err != nil {
		t.Fatal(err)
	}
	smtpPort, err1 := pgcluster.FreePort()
	httpPort, err2 := pgcluster.FreePort()
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	cmd := exec.Command(path, "--smtp", fmt.Sprintf("127.0.0.1:%d", smtpPort), "--listen", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--database", filepath.Join(t.TempDir(), "mail.db"), "--smtp-auth-accept-any", "--smtp-auth-allow-insecure",
		"--disable-version-check")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	s := &Server{SMTPPort: smtpPort, api: fmt.Sprintf("http://127.0.0.1:%d/api/v1", httpPort)}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.api + "/messages")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("mailpit did not answer in 30 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Message is a received mail.
type Message struct {
	Subject, Text string
}

// Last waits (up to 30 s) for a mail to addr and returns the newest.
func (s *Server) Last(t testing.TB, addr string) Message {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list struct {
			Messages []struct {
				ID      string
				Subject string
				To      []struct{ Address string }
			} `json:"messages"`
		}
		if err := getJSON(s.api+"/messages", &list); err != nil {
			t.Fatal(err)
		}
		for _, m := range list.Messages { // newest first
			if len(m.To) > 0 && strings.EqualFold(m.To[0].Address, addr) {
				var full struct{ Subject, Text string }
				if err := getJSON(s.api+"/message/"+m.ID, &full); err != nil {
					t.Fatal(err)
				}
				return Message{Subject: full.Subject, Text: full.Text}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no mail to %s in 30 s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Count is how many mails to addr mailpit holds.
func (s *Server) Count(t testing.TB, addr string) int {
	t.Helper()
	var list struct {
		Messages []struct{ To []struct{ Address string } } `json:"messages"`
	}
	if err := getJSON(s.api+"/messages", &list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range list.Messages {
		if len(m.To) > 0 && strings.EqualFold(m.To[0].Address, addr) {
			n++
		}
	}
	return n
}

func getJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
