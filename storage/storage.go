// Package storage is Fluxbase's file storage without HTTP: the Backend
// that keeps objects' bytes (Local on disk, S3 through minio-go), key and
// name validation that keeps every key inside its backend's root, and the
// Store that keeps buckets' and objects' metadata in storage.buckets and
// storage.objects, as the caller's database role so row-level security
// decides. It guarantees that an object is never half-written: bytes go
// to a new versioned key and the row is switched to it in one
// transaction (docs/ARCHITECTURE.md, "Storage"). The HTTP surface is
// api/storage.
package storage

// The providers FLUXBASE_STORAGE_PROVIDER accepts.
const (
	ProviderLocal = "local"
	ProviderS3    = "s3"
)

// Config selects and configures the storage backend; zero values mean
// defaults.
type Config struct {
	// Provider is ProviderLocal (the default) or ProviderS3.
	Provider string
	// LocalPath is the root folder of the local provider.
	LocalPath string
	// LocalShared declares LocalPath a folder every node of a cluster
	// shares (a network file system), which silences the warning that
	// local files are one node's.
	LocalShared bool
	// MaxFileSize bounds every upload, under each bucket's own limit; 0
	// means none.
	MaxFileSize int64
	// S3 configures the S3 provider.
	S3 S3Config
}

// S3Config addresses an S3-compatible service (AWS S3, MinIO, Spaces).
type S3Config struct {
	Endpoint  string // host or host:port, without a scheme
	AccessKey string
	SecretKey string
	Region    string
	Bucket    string
	UseSSL    bool
}
