package storage

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
)

// A version's bytes are tracked in storage.fluxbase_pending whenever no
// row names them: from before they are written until a row names them
// (kind 'upload'), and from when a row stops naming them until they are
// deleted (kind 'replaced', recorded by a trigger in the transaction
// that changed the row, whoever ran it). So bytes a crash left behind
// are always listed, and Collect deletes them. Cached image renditions
// (kind 'render', version "<source version>.render/<options>") are
// listed too, and collected once no row names their source version.

// ref names one version of an object.
type ref struct{ bucket, name, version string }

func (r ref) key() string { return Key(r.bucket, r.name, r.version) }

// errCollected is an upload that outlived the collection age: its
// bytes were collected before its row could name them.
var errCollected = errors.New("storage: the upload's bytes were collected before it finished")

// begin records r as an upload in flight, before its bytes are written.
func (s *Store) begin(ctx context.Context, r ref) error {
	_, err := s.pool.Exec(ctx, `insert into storage.fluxbase_pending (bucket_id, name, version, kind) values ($1, $2, $3, 'upload')`,
		r.bucket, r.name, r.version)
	return mapErr(err)
}

// claim takes r's upload record in tx, the transaction whose row will
// name it: a collector that took it first has deleted the bytes.
func claim(ctx context.Context, tx pgx.Tx, r ref) error {
	tag, err := tx.Exec(ctx, `delete from storage.fluxbase_pending where bucket_id = $1 and name = $2 and version = $3 and kind = 'upload'`,
		r.bucket, r.name, r.version)
	if err == nil && tag.RowsAffected() == 0 {
		return errCollected
	}
	return err
}

// release deletes the bytes of versions no row names and then their
// records. What fails stays recorded, for Collect.
func (s *Store) release(refs ...ref) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, r := range refs {
		if err := s.backend.Delete(ctx, r.key()); err != nil {
			s.log.Warn("delete unnamed object bytes; left for collection", zap.String("key", r.key()), zap.Error(err))
			continue
		}
		if _, err := s.pool.Exec(ctx, `delete from storage.fluxbase_pending where bucket_id = $1 and name = $2 and version = $3`,
			r.bucket, r.name, r.version); err != nil {
			s.log.Warn("forget deleted object bytes", zap.String("key", r.key()), zap.Error(err))
		}
	}
}

// Collect deletes the bytes no row names: versions replaced or deleted,
// and uploads begun more than uploadAge ago that no row names (their
// node died, or they took longer; such an upload then fails rather than
// name missing bytes). It returns how many versions it deleted. Several
// nodes may collect at once: each takes rows the others do not hold.
func (s *Store) Collect(ctx context.Context, uploadAge time.Duration) (int, error) {
	total := 0
	for {
		n, err := s.collectBatch(ctx, uploadAge, 100)
		total += n
		if err != nil || n < 100 {
			return total, err
		}
	}
}

func (s *Store) collectBatch(ctx context.Context, uploadAge time.Duration, limit int) (int, error) {
	var n int
	err := s.asSuperuser(ctx, func(tx pgx.Tx) error {
		refs, err := queryRows(ctx, tx, func(row pgx.Row) (ref, error) {
			var r ref
			err := row.Scan(&r.bucket, &r.name, &r.version)
			return r, err
		}, `select bucket_id, name, version from storage.fluxbase_pending p
		  where (kind <> 'upload' or created_at < now() - $1::interval)
		    and not exists (select from storage.objects o where o.bucket_id = p.bucket_id and o.name = p.name
		      and o.version = split_part(p.version, '.render/', 1))
		  limit $2 for update skip locked`, uploadAge, limit)
		if err != nil {
			return err
		}
		// The bytes go while their records are locked, so an upload
		// cannot claim one of them meanwhile.
		for _, r := range refs {
			if err := s.backend.Delete(ctx, r.key()); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `delete from storage.fluxbase_pending where bucket_id = $1 and name = $2 and version = $3`,
				r.bucket, r.name, r.version); err != nil {
				return err
			}
		}
		n = len(refs)
		return nil
	})
	return n, err
}

// DefaultUploadAge is how long an upload may take before Collect may
// take its bytes.
const DefaultUploadAge = 24 * time.Hour

// RunCollector collects every interval until ctx ends, starting at
// once; failures are logged and retried at the next round.
func (s *Store) RunCollector(ctx context.Context, interval, uploadAge time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := s.Collect(ctx, uploadAge)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			s.log.Warn("collect unnamed object bytes", zap.Error(err))
		case n > 0:
			s.log.Info("collected unnamed object bytes", zap.Int("versions", n))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
