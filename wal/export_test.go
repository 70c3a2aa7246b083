package wal

import (
	"os"
	"time"
)

func init() { testReadBack = os.Getenv("BOP_TEST_READBACK") == "1" }

// SetCheckpointWait sets how long CheckpointStart waits for another
// connection's commit in progress, for a test, and returns the restore.
func SetCheckpointWait(d time.Duration) (restore func()) {
	old := checkpointWait.Swap(int64(d))
	return func() { checkpointWait.Store(old) }
}

// RecordEnded records the WAL generation with these salts as ended in the
// spool's state, as capture does when SQLite deletes or empties the WAL.
func (s *Spool) RecordEnded(salt1, salt2 uint32) error {
	hdr := testWALHeader(salt1, salt2)
	return s.persist(0, &hdr, nil, unknownStart)
}

// testWALHeader is a WAL header with these salts (any non-zero header:
// only the salts are compared).
func testWALHeader(salt1, salt2 uint32) [walHeaderSize]byte {
	var hdr [walHeaderSize]byte
	hdr[0] = 0x37
	hdr[16], hdr[17], hdr[18], hdr[19] = byte(salt1>>24), byte(salt1>>16), byte(salt1>>8), byte(salt1)
	hdr[20], hdr[21], hdr[22], hdr[23] = byte(salt2>>24), byte(salt2>>16), byte(salt2>>8), byte(salt2)
	return hdr
}

// RecordSeen records the WAL generation with these salts as the one
// capture follows, its records beginning after txid after, as capture does
// when SQLite writes a new WAL header.
func (s *Spool) RecordSeen(salt1, salt2 uint32, after uint64) error {
	hdr := testWALHeader(salt1, salt2)
	return s.persist(0, nil, &hdr, after)
}

// WALStart is the state's walStart: one more than the txid after which
// the followed generation's records begin (0: not known).
func (s *Spool) WALStart() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.cur.walStart
}

// ReadBackForced reports whether BOP_TEST_READBACK=1 makes every capture
// read back (tests of the in-memory frame store skip then).
func ReadBackForced() bool { return testReadBack }

// GroupRefs is the number of frame references the coalesced group holds
// (read-back), superseded ones included.
func (c *Capture) GroupRefs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.pend.refs)
}
