// Package vfs is bop's SQLite VFS in primary mode, on
// github.com/ncruces/go-sqlite3. Register it once and open databases with
// vfs=<name>:
//
//	import (
//		"database/sql"
//
//		bop "github.com/bopstore/bop/vfs"
//		_ "github.com/ncruces/go-sqlite3/driver"
//	)
//
//	bop.Register("bop", bop.Config{})                     // zero Config works
//	db, _ := sql.Open("sqlite3", "file:app.db?vfs=bop")   // WAL mode, captured
//
// Everything SQLite does keeps working. Underneath, the VFS wraps the default
// (os) VFS: the main database file is the local page image, every write to
// the WAL feeds package wal, which captures each committed transaction into
// a local spool, from which the publisher (package checkpoint) publishes to
// the remote store. Temp files, sorter spills, statement and rollback
// journals go straight to the default VFS.
//
// What the VFS guarantees, and the code that keeps it:
//
//   - WAL mode (autoext.go, mainfile.go Pragma): every read-write
//     connection whose main database is a bop file is put in WAL mode when it
//     opens; a later journal_mode other than WAL is refused (ErrJournalMode).
//     The writes a new database receives before WAL mode is on are captured
//     as rollback-mode transactions. WAL mode fixes the page size once page 1
//     exists: a page size other than 4096 must come in the DSN,
//     file:app.db?vfs=bop&_pragma=page_size(8192).
//   - One owner (owner.go): one process has a database open through bop at a
//     time (a flock on app.db-bop/lock); another gets ErrOwnedElsewhere
//     naming the owner.
//   - No forked history (seal.go, database.go): a database or WAL changed by
//     another program since bop last had it is refused at open
//     (ErrChangedOutside). Stock sqlite3 may read the live app.db only with
//     file:app.db?immutable=1 and only while no bop process has it open.
//   - Adoption (adopt.go): the first open of an existing non-empty database
//     records the database as SQLite reads it (the file with its WAL's
//     committed frames over it) as the spool's first transaction, which
//     names the WAL's last commit frame so that capture goes on after it;
//     nothing is published as zeros, nothing is lost, no state that never
//     existed is published.
//   - The image (image.go): normally the complete database; a sparse image
//     (after a rebuild from the store) reads pages it never held from the
//     remote at T_seed, verified, and never offers mmap.
//   - One writer in the store (role.go): an open takes the writer role with
//     the manifest's takeover protocol; another live writer makes it fail
//     with ErrOwnedElsewhere unless forced (Config.ForceTakeover,
//     bop_force_takeover=1). Local state the store has moved past is moved
//     to app.db-bop/quarantine/ (quarantine.go) and rebuilt from the store;
//     it is never published. An empty or missing file of a database the
//     store has opens from the store.
//   - Publishing (publish.go): a checkpoint.Publisher per database publishes
//     the spool every CheckpointInterval; close publishes the rest and
//     hands off (release record).
//   - Durability (hook.go): Async commits return once committed locally
//     (MaxLag bounds the lag: backpressure); Sync commits return once
//     published, or fail with ErrOutcomeUnknown (committed locally, will
//     still be published). The waits run in SQLite's WAL hook, which also
//     does the auto-checkpoint.
//   - Fencing (walfile.go): once another writer took over, commits fail with
//     ErrFenced; reads keep working.
//
// Pragmas (FilePragma): PRAGMA bop_status returns one row, a JSON object
// (see Status); PRAGMA bop_txid the newest captured txid; PRAGMA
// bop_checkpoint publishes now and returns the published txid; PRAGMA
// wal_autocheckpoint is answered by bop (its WAL hook replaces SQLite's).
//
// docs/arch/vfs.md describes the package; docs/FORMAT-vfs.md the files it
// keeps in app.db-bop/.
package vfs
