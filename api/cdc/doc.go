// Package cdc will be the /cdc/v1 surface: the change log of the
// embedded NATS JetStream served over HTTP to consumers outside the node.
// The log itself belongs to broker and replication; this package will own
// only its HTTP. Until it exists the edge answers /cdc/v1 behind the
// guard with 404.
package cdc
