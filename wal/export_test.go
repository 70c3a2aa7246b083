package wal

import "time"

// SetCheckpointWait sets how long CheckpointStart waits for another
// connection's commit in progress, for a test, and returns the restore.
func SetCheckpointWait(d time.Duration) (restore func()) {
	old := checkpointWait.Swap(int64(d))
	return func() { checkpointWait.Store(old) }
}
