// Package storage will be the /storage/v1 surface: Supabase Storage's
// HTTP API — buckets, objects, public objects and signed URLs (api.Open
// routes), with access decided by row-level policies run through pgrole.
// The objects' bytes and metadata will belong to a domain package; this
// package will own only their HTTP. Until it exists the edge answers
// /storage/v1 behind the guard with 404.
package storage
