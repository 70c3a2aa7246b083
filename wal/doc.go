// Package wal captures every committed SQLite transaction from the WAL
// writes a VFS observes, exactly once and in commit order, and keeps them
// in a local, durable spool until they are published.
//
// Two types do the work:
//
//   - Capture (one per database, shared by all its connections, each
//     through a Conn) parses the WAL as SQLite writes it. A transaction is
//     captured at a complete commit frame whose salts match the WAL header
//     and whose checksum chain verifies from the header, but it stays
//     provisional until SQLite shows it committed (its writer's commit sync
//     succeeded, its writer signalled SQLITE_FCNTL_COMMIT_PHASETWO, a later
//     frame was written, a checkpoint started, the WAL generation ended). A
//     write at or below a provisional transaction withdraws it: SQLite
//     rolled it back. Only final transactions reach the spool. Frames of
//     open transactions live in a bounded memory arena and spill to disk.
//     Rollback-journal-mode writes (before WAL mode is on) are captured as
//     whole pages read back from the database file at the commit. At open,
//     reconciliation makes spool and WAL agree the way SQLite's own
//     recovery will read the WAL.
//
//   - Spool stores transactions as records in segment files (txid, kind,
//     page size, database size, pages with per-page xxhash64, the WAL
//     identity of the commit frame), detects torn tails and corruption,
//     iterates every version or the newest version per page, applies
//     backpressure past a byte limit, and truncates only what is confirmed
//     durable and not leased.
//
// The VFS feeds the events (see docs/arch/wal.md for the table):
//
//	main file opened / closed    Capture.NewConn(mainFile) / Conn.Close
//	WAL opened / closed          Conn.AttachWAL(walFile) / Conn.DetachWAL
//	WAL write / truncate         Conn.Write(p, off) / Conn.Truncate(size), after the base call succeeded
//	WAL sync                     Conn.Sync(func() error { return base.Sync(flags) })
//	WAL deleted                  Capture.Deleted
//	main file write              Conn.MainWrite(p, off), after the base write
//	main lock to SHARED/NONE     Conn.MainUnlock, before the base unlock
//	FCNTL_COMMIT_PHASETWO        Conn.CommitPhaseTwo
//	FCNTL_CKPT_START / DONE      Conn.CheckpointStart (an error must fail the checkpoint) / Conn.CheckpointDone
//
// The publisher calls Capture.SyncForPublish, publishes nothing above the
// txid it returns, and truncates the spool (Spool.Truncate) once
// published, holding a Spool.Lease on the range meanwhile.
//
// The on-disk format is in docs/FORMAT-wal.md; the design, state machine
// and fsync-order invariants in docs/arch/wal.md.
package wal
