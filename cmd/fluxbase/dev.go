package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/fluxbase/fluxbase/auth"
	"github.com/fluxbase/fluxbase/internal/pgcluster"
	"github.com/fluxbase/fluxbase/node"
)

// devPostgresPort is tried first for the private cluster (the port the
// Supabase CLI uses for its local database, so tools find it).
const devPostgresPort = 54322

// dev runs a node on a private PostgreSQL cluster kept under the data
// directory, with a JWT secret and API keys kept there too, so a second run
// reuses everything. The cluster stops when the node does.
func dev(ctx context.Context, cfg node.Config, log *zap.Logger) error {
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	cfg.DataDir = dir
	if !filepath.IsAbs(cfg.Storage.LocalPath) {
		cfg.Storage.LocalPath = filepath.Join(dir, "storage")
	}
	if cfg.Auth.JWTSecret == "" {
		if cfg.Auth.JWTSecret, err = devSecret(dir); err != nil {
			return err
		}
	}
	keys, err := devKeys(dir, cfg.Auth.JWTSecret)
	if err != nil {
		return err
	}

	var cluster *pgcluster.Cluster
	if cfg.Database.URL == "" {
		port, err := devPort(dir)
		if err != nil {
			return err
		}
		log.Info("starting PostgreSQL", zap.String("dir", filepath.Join(dir, "postgres")), zap.Int("port", port))
		cluster, err = pgcluster.Start(ctx, pgcluster.Options{
			Dir:            filepath.Join(dir, "postgres"),
			Port:           port,
			AnyPortIfTaken: true,
			Install:        true,
			Log:            &zapWriter{log.Named("postgres")},
		})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "postgres.port"), []byte(strconv.Itoa(cluster.Port)+"\n"), 0o644); err != nil {
			return fmt.Errorf("keep PostgreSQL's port: %w", err)
		}
		defer func() {
			log.Info("stopping PostgreSQL")
			cluster.Stop()
		}()
		if err := cluster.CreateDatabase(ctx, "fluxbase"); err != nil {
			return fmt.Errorf("create database: %w", err)
		}
		cfg.Database.URL = cluster.URL("fluxbase")
	}

	printBanner(cfg, keys)

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return serve(ctx, cfg, log) })
	if cluster != nil {
		g.Go(func() error {
			select {
			case <-cluster.Exited():
				return errors.New("PostgreSQL exited unexpectedly")
			case <-ctx.Done():
				return nil
			}
		})
	}
	return g.Wait()
}

type devAPIKeys struct{ anon, service string }

// devSecret reads the JWT secret kept in the data directory, making one the
// first time.
func devSecret(dir string) (string, error) {
	path := filepath.Join(dir, "jwt_secret")
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); len(s) >= auth.MinSecretLength {
			return s, nil
		}
		return "", fmt.Errorf("%s holds a secret shorter than %d characters", path, auth.MinSecretLength)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	s := hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keep JWT secret: %w", err)
	}
	return s, nil
}

// devKeys reads the API keys kept in keys.env (shell syntax, so scripts can
// source it), issuing them when missing or signed with another secret.
func devKeys(dir, secret string) (devAPIKeys, error) {
	path := filepath.Join(dir, "keys.env")
	v, err := auth.NewVerifier(secret)
	if err != nil {
		return devAPIKeys{}, err
	}
	var keys devAPIKeys
	if f, err := os.Open(path); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			name, value, _ := strings.Cut(sc.Text(), "=")
			switch name {
			case "FLUXBASE_ANON_KEY":
				keys.anon = value
			case "FLUXBASE_SERVICE_KEY":
				keys.service = value
			}
		}
		f.Close()
		a, errA := v.Verify(keys.anon)
		s, errS := v.Verify(keys.service)
		if errA == nil && errS == nil && a.Role == auth.RoleAnon && s.Role == auth.RoleServiceRole {
			return keys, nil
		}
	}
	if keys.anon, err = auth.APIKey(secret, auth.RoleAnon); err != nil {
		return keys, err
	}
	if keys.service, err = auth.APIKey(secret, auth.RoleServiceRole); err != nil {
		return keys, err
	}
	content := "FLUXBASE_ANON_KEY=" + keys.anon + "\nFLUXBASE_SERVICE_KEY=" + keys.service + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return keys, fmt.Errorf("keep API keys: %w", err)
	}
	return keys, nil
}

// devPort is the port to start the cluster on: the one used before (kept
// once a start succeeds), else 54322, else any free port.
func devPort(dir string) (int, error) {
	path := filepath.Join(dir, "postgres.port")
	if b, err := os.ReadFile(path); err == nil {
		if p, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pgcluster.PortFree(p) {
			return p, nil
		}
	}
	if pgcluster.PortFree(devPostgresPort) {
		return devPostgresPort, nil
	}
	return pgcluster.FreePort()
}

func printBanner(cfg node.Config, keys devAPIKeys) {
	host, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	fmt.Printf(`
  Fluxbase is starting (dev)

  API URL:      http://%s
  Database URL: %s
  anon key:     %s
  service key:  %s

  The keys are kept in %s; stop with Ctrl-C.

`, net.JoinHostPort(host, port), cfg.Database.URL, keys.anon, keys.service, filepath.Join(cfg.DataDir, "keys.env"))
}

// zapWriter logs each line PostgreSQL writes.
type zapWriter struct{ log *zap.Logger }

func (w *zapWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" {
			w.log.Debug(line)
		}
	}
	return len(p), nil
}
