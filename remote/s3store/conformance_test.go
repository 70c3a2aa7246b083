package s3store

import (
	"testing"

	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/storetest"
)

// TestConformance runs the remote.Store conformance suite against the
// versitygw test server, with the smallest parts S3 allows so that the
// multipart cases stay small: objects just below, at and above the
// threshold, and over several parts.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) remote.Store {
		return newTestStore(t, func(c *Config) {
			c.PartSize = MinPartSize
			c.MultipartThreshold = MinPartSize
			c.Concurrency = 2
		})
	}, storetest.Options{MultipartThreshold: MinPartSize})
}
