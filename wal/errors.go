package wal

import "errors"

// Sentinel errors. They are wrapped with context (file, txid, frame);
// callers test with errors.Is.
var (
	// ErrCorrupt: bytes on disk fail their checksum or are not what the
	// format says (a spool record, segment or state file). The error names
	// the file and, where known, the txid.
	ErrCorrupt = errors.New("wal: corrupt spool data")

	// ErrVersion: a spool file was written by a newer format version than
	// this code understands. Upgrade bop; never rewrite the file.
	ErrVersion = errors.New("wal: spool format version is newer than supported")

	// ErrBadWAL: a WAL file that SQLite did not write the way SQLite
	// writes it (bad magic, bad header checksum, garbage), or a write
	// stream that contradicts the WAL format. Nothing is captured from it.
	ErrBadWAL = errors.New("wal: not a valid SQLite WAL")

	// ErrUnknownWAL: at open, the WAL holds committed frames of a WAL
	// generation that capture never saw: something other than bop wrote
	// the database. Nothing is captured; the VFS reports the database as
	// changed outside bop (unless the caller adopts it).
	ErrUnknownWAL = errors.New("wal: WAL holds transactions that bop never captured")

	// ErrLost: the WAL no longer holds a transaction the spool recorded as
	// durable in it, or SQLite wrote over a frame capture had already
	// treated as committed. Capture stops (every later event fails) so
	// nothing inconsistent is spooled; reopening reconciles spool and WAL.
	ErrLost = errors.New("wal: capture lost track of the WAL")

	// ErrUnaligned: a write to the main database outside a checkpoint
	// (rollback-journal mode) that is not one whole page.
	ErrUnaligned = errors.New("wal: main database write is not a whole page")

	// ErrLeased: Truncate refused because a lease covers part of the range.
	ErrLeased = errors.New("wal: spool range is leased")

	// ErrSpoolFull: an append waited longer than SpoolOptions.AppendTimeout
	// for the spool to drop below its byte limit.
	ErrSpoolFull = errors.New("wal: spool is over its byte limit")

	// ErrClosed: the spool or capture is closed.
	ErrClosed = errors.New("wal: closed")

	// ErrRange: a txid range outside what the spool holds.
	ErrRange = errors.New("wal: txid range not in spool")
)
