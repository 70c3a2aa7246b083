package vfs

import (
	"errors"

	"github.com/ncruces/go-sqlite3"
)

// Sentinel errors. The VFS wraps them with context (the database path, the
// owner, what changed); callers test with errors.Is. They stay reachable
// through database/sql and *sqlite3.Error: the VFS returns them to SQLite as
// vfs.SystemError(err, CANTOPEN or IOERR_*), and *sqlite3.Error unwraps to
// them.
var (
	// ErrOwnedElsewhere: another process has the database open through bop
	// (it holds the lock file in the database's -bop folder). The error
	// names the owner: pid, host, start time, writer id.
	ErrOwnedElsewhere = errors.New("bop: database is owned by another process")

	// ErrChangedOutside: the database file or its WAL was changed by
	// something other than bop since bop last had it open (another
	// program, stock sqlite3, a copy put in its place), or the WAL is gone
	// with transactions bop had confirmed durable in it (deleted, or its
	// folder entry lost to a power loss: wal.ErrLost). bop refuses to open
	// it rather than publish a forked history. Restore the database, or
	// move the -bop folder away to adopt the file as a new database.
	ErrChangedOutside = errors.New("bop: database was changed outside bop")

	// ErrJournalMode: a journal mode other than WAL was asked for. bop
	// captures transactions from the WAL; the database stays in WAL mode.
	ErrJournalMode = errors.New("bop: only journal_mode=wal is supported")

	// ErrRemoteHasDatabase: the first open of an existing file with data
	// (an adoption) found the remote store already holding a database of
	// that name: adopting it would fork that history. Open an empty or
	// missing file to get the store's database, restore it, or set another
	// Name. Also the reason a publisher stops when it finds, after an open
	// that could not reach the store, that another writer published: the
	// next open quarantines the local state and rebuilds.
	ErrRemoteHasDatabase = errors.New("bop: the remote store already has this database")

	// ErrNotAvailable: PRAGMA bop_checkpoint on a database whose publisher
	// has not started: a new database before its first page exists, or a
	// database opened read-only.
	ErrNotAvailable = errors.New("bop: the publisher is not running")

	// ErrOutcomeUnknown: with Durability Sync, the publish that should
	// contain a commit failed or did not finish within SyncTimeout (with
	// Async, the statement's context ended a backpressure wait). The
	// transaction IS committed locally and will still be published when
	// the store is reachable; whether it already is, the caller cannot
	// know. The statement's error wraps it: errors.Is(err,
	// vfs.ErrOutcomeUnknown) works through database/sql.
	ErrOutcomeUnknown = errors.New("bop: commit outcome unknown: committed locally, not (yet) published")

	// ErrClosed: the VFS was closed (VFS.Close); no new database opens.
	ErrClosed = errors.New("bop: VFS is closed")

	// ErrFenced: another writer took this database over in the store
	// (DESIGN section 6). This process may never publish again: its
	// commits fail (the transaction is rolled back), reads keep working,
	// PRAGMA bop_status says fenced. Reopening quarantines the local state
	// and rebuilds it from the store.
	//
	// It is an sqlite3.ExtendedErrorCode (SQLITE_READONLY with bop's own
	// extended code; its text is SQLite's "attempt to write a readonly
	// database") because that is the only part of a failed write that
	// SQLite carries back to the caller: errors.Is(err, vfs.ErrFenced)
	// works on the error of a refused commit through database/sql and on
	// the errors bop returns itself (an open that lost the takeover).
	ErrFenced error = fencedCode

	// ErrSpoolFull: a commit refused because the spool stayed at its
	// limit (Config.SpoolLimit) for the whole wait: publishing is behind
	// (the store unreachable or slow). The transaction is rolled back;
	// the status says why. Like ErrFenced, an extended result code
	// (SQLITE_FULL with bop's code: SQLite's text is "database or disk is
	// full"), so that errors.Is works on the error database/sql returns.
	ErrSpoolFull error = spoolFullCode

	// ErrBadState: bop's own local state (the -bop folder) is damaged or
	// from a newer version. The error names the file.
	ErrBadState = errors.New("bop: local state is damaged")
)

// fencedCode is the extended result code of a commit refused because the
// writer is fenced: SQLITE_READONLY with an extended code SQLite does not
// use (0x62, 'b'), so that SQLite's rollback path treats it as a plain
// read-only refusal and the code reaches the caller unchanged.
const fencedCode = sqlite3.ExtendedErrorCode(uint16(sqlite3.READONLY) | 0x62<<8)

// spoolFullCode is ErrSpoolFull's: SQLITE_FULL with the same unused
// extended code.
const spoolFullCode = sqlite3.ExtendedErrorCode(uint16(sqlite3.FULL) | 0x62<<8)
