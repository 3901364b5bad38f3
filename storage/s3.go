package storage

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3PartSize is the part size of multipart uploads: an upload of unknown
// length is buffered one part at a time, so this bounds the memory one
// upload holds.
const S3PartSize = 8 << 20

// S3 keeps objects in one bucket of an S3-compatible service, through
// minio-go. Objects larger than a part go up as multipart uploads, which
// the service makes visible only when completed, so a reader never sees
// part of one.
type S3 struct {
	client *minio.Client
	bucket string
}

// NewS3 connects to the service of cfg and creates its bucket when it is
// missing.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errors.New("storage: s3 needs an endpoint and a bucket")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.UseSSL,
		Region: cfg.Region,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client: %w", err)
	}
	s := &S3{client: client, bucket: cfg.Bucket}
	exists, err := client.BucketExists(ctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("s3 bucket %s: %w", cfg.Bucket, err)
	}
	if !exists {
		err := client.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region})
		if err != nil && s3Code(err) != "BucketAlreadyOwnedByYou" && s3Code(err) != "BucketAlreadyExists" {
			return nil, fmt.Errorf("s3 create bucket %s: %w", cfg.Bucket, err)
		}
	}
	return s, nil
}

// Put implements Backend. The MD5 is computed as the bytes pass, since a
// multipart upload's ETag is not one.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	h := md5.New()
	cr := &countingReader{r: io.TeeReader(r, h)}
	_, err := s.client.PutObject(ctx, s.bucket, key, cr, size, minio.PutObjectOptions{
		PartSize:    S3PartSize,
		ContentType: "application/octet-stream",
	})
	if err != nil {
		return Info{}, s.err("put", key, err)
	}
	if size >= 0 && cr.n != size {
		_ = s.Delete(ctx, key)
		return Info{}, fmt.Errorf("put %s: %d bytes, want %d: %w", key, cr.n, size, io.ErrUnexpectedEOF)
	}
	info, err := s.Stat(ctx, key)
	if err != nil {
		return Info{}, err
	}
	info.ETag = hex.EncodeToString(h.Sum(nil))
	return info, nil
}

// Get implements Backend.
func (s *S3) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, Info, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Info{}, err
	}
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, Info{}, err
	}
	if length == 0 || offset >= info.Size {
		return io.NopCloser(http.NoBody), info, nil
	}
	var opts minio.GetObjectOptions
	if offset > 0 || length >= 0 {
		end := int64(-1)
		if length >= 0 {
			end = offset + length - 1
		}
		if end < 0 || end >= info.Size {
			end = info.Size - 1
		}
		if err := opts.SetRange(offset, end); err != nil {
			return nil, Info{}, fmt.Errorf("get %s: %w", key, err)
		}
	}
	obj, err := s.client.GetObject(ctx, s.bucket, key, opts)
	if err != nil {
		return nil, Info{}, s.err("get", key, err)
	}
	return obj, info, nil
}

// Stat implements Backend.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := ValidateKey(key); err != nil {
		return Info{}, err
	}
	st, err := s.client.StatObject(ctx, s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.err("stat", key, err)
	}
	return Info{Size: st.Size, ModTime: st.LastModified}, nil
}

// Delete implements Backend.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
		if err := s.err("delete", key, err); !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	return nil
}

// Copy implements Backend.
func (s *S3) Copy(ctx context.Context, src, dst string) (Info, error) {
	if err := ValidateKey(src); err != nil {
		return Info{}, err
	}
	if err := ValidateKey(dst); err != nil {
		return Info{}, err
	}
	r, info, err := s.Get(ctx, src, 0, -1)
	if err != nil {
		return Info{}, err
	}
	defer r.Close()
	// Streaming the bytes through gives the copy its MD5, which a
	// server-side copy of a multipart object would not.
	return s.Put(ctx, dst, r, info.Size)
}

func s3Code(err error) string { return minio.ToErrorResponse(err).Code }

// err maps the service's answer once, here.
func (s *S3) err(op, key string, err error) error {
	switch s3Code(err) {
	case "NoSuchKey", "NotFound":
		return ErrNotFound
	}
	if minio.ToErrorResponse(err).StatusCode == http.StatusNotFound {
		return ErrNotFound
	}
	return fmt.Errorf("s3 %s %s: %w", op, key, err)
}
