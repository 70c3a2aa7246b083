package vfs

import "errors"

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
	// program, stock sqlite3, a copy put in its place). bop refuses to open
	// it rather than publish a forked history. Restore the database, or
	// move the -bop folder away to adopt the file as a new database.
	ErrChangedOutside = errors.New("bop: database was changed outside bop")

	// ErrJournalMode: a journal mode other than WAL was asked for. bop
	// captures transactions from the WAL; the database stays in WAL mode.
	ErrJournalMode = errors.New("bop: only journal_mode=wal is supported")

	// ErrRemoteHasDatabase: the first open of a database (adoption of an
	// existing file, or a new empty one) found the remote store already
	// holding a database of that name. Restore it instead, or set another
	// Name.
	ErrRemoteHasDatabase = errors.New("bop: the remote store already has this database")

	// ErrNotAvailable: the feature needs the publisher (package checkpoint),
	// which this build does not have yet: PRAGMA bop_checkpoint and the
	// sync durability mode.
	ErrNotAvailable = errors.New("bop: not available in this build (needs the publisher)")

	// ErrClosed: the VFS was closed (VFS.Close); no new database opens.
	ErrClosed = errors.New("bop: VFS is closed")

	// ErrBadState: bop's own local state (the -bop folder) is damaged or
	// from a newer version. The error names the file.
	ErrBadState = errors.New("bop: local state is damaged")
)
