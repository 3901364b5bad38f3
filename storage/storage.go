// Package storage will hold Fluxbase's file storage: a small Backend
// interface with a local-disk and an S3 implementation, and bucket and
// object metadata. It has no HTTP in it; the storage API's handlers live
// in api/storage. Today it holds only the configuration a node reads from
// its environment (FLUXBASE_STORAGE_*), so that the setting is validated
// at start-up.
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
