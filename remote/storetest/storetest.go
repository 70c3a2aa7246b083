// Package storetest is the conformance suite of remote.Store: the
// contract written in remote/store.go, as tests. Every backend (fsstore,
// s3store) and every wrapper (fault, cache) runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) remote.Store {
//			s, err := fsstore.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		}, storetest.Options{})
//	}
//
// Each case is a subtest with its own fresh store, so a backend's failure
// names the rule it breaks.
package storetest

import (
	"testing"

	"github.com/bopstore/bop/remote"
)

// Options adapt the suite to a backend.
type Options struct {
	// MultipartThreshold, if > 0, is the backend's multipart threshold:
	// the suite then puts objects just below, at, and above it, and at
	// several parts (at most about 3 parts).
	MultipartThreshold int64
	// SkipSlow skips the large-object cases.
	SkipSlow bool
}

// Run runs the conformance suite. newStore returns a fresh, empty store for
// each subtest (e.g. a new temp dir, or a new unique key prefix on S3);
// cleanup is the caller's (t.Cleanup).
func Run(t *testing.T, newStore func(t *testing.T) remote.Store, opts Options) {
	cases := []struct {
		name string
		fn   func(t *testing.T, s remote.Store, opts Options)
	}{
		{"RoundTrip", testRoundTrip},
		{"ReaderShapes", testReaderShapes},
		{"Large", testLarge},
		{"Multipart", testMultipart},
		{"SizeMismatch", testSizeMismatch},
		{"Ranges", testRanges},
		{"RangesEmptyObject", testRangesEmpty},
		{"Missing", testMissing},
		{"InvalidKeys", testInvalidKeys},
		{"LongKey", testLongKey},
		{"Replace", testReplace},
		{"Head", testHead},
		{"FolderAndKeyReuse", testFolderReuse},
		{"List", testList},
		{"ListStops", testListStops},
		{"IfNoneMatch", testIfNoneMatch},
		{"IfMatch", testIfMatch},
		{"BothConditions", testBothConditions},
		{"RaceIfNoneMatch", testRaceIfNoneMatch},
		{"RaceIfMatch", testRaceIfMatch},
		{"ConcurrentKeys", testConcurrentKeys},
		{"CancelBefore", testCancelBefore},
		{"CancelPutMidStream", testCancelPutMidStream},
		{"CancelGetMidStream", testCancelGetMidStream},
		{"BodyError", testBodyError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			if s == nil {
				t.Fatal("storetest: newStore returned nil")
			}
			c.fn(t, s, opts)
		})
	}
}
