package vfs

import "github.com/bopstore/bop/wal"

// spoolBufferBytes is the spool's append buffer
// (wal.SpoolOptions.BufferBytes): committed records collect in memory and
// reach the segment file in writes of this size, at the latest when the
// spool syncs (every WAL sync, checkpoint start, WAL restart, truncation
// and deletion) or reads. With one write(2) per commit, small autocommit
// transactions cost bop as much kernel time again as SQLite's own WAL
// write (bench/vfs W2). Why a record only in the buffer is safe (lost by a
// process crash as an unsynced one is by a power loss; its frames are
// still in the WAL): wal/segfile.go. 256 KiB stays in the CPU's cache
// between the copy into it and the kernel's copy out of it.
const spoolBufferBytes = 256 << 10

// testSpoolFS, if set (tests only: vfs/powerloss_test.go), is the file
// system every database's spool writes through (wal.SpoolOptions.FS); nil
// is the operating system's.
var testSpoolFS wal.FS
