package vfs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/bopstore/bop/checkpoint"
	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// The WAL hook. SQLite calls a connection's WAL hook after every commit in
// WAL mode, once the write lock is released (other connections can already
// write), before the statement returns; an error it returns becomes the
// statement's error while the commit stands. That is where a commit waits
// for its publish (sync durability) or for publishing to catch up (async,
// past MaxLag): SQLite's COMMIT_PHASETWO also comes after the commit, but
// SQLite ignores its error, and waiting there would hold nothing up but
// also tell the caller nothing.
//
// Setting a WAL hook replaces SQLite's own auto-checkpoint (which is a WAL
// hook), so the hook runs a passive checkpoint itself once the WAL holds
// the connection's threshold of pages (Config.AutoCheckpoint, default
// 1000), and PRAGMA wal_autocheckpoint is answered by the VFS
// (mainFile.Pragma) instead of SQLite, which would replace the hook.
//
// Limits: the hook is installed on read-write connections whose main
// database is a bop file (by the auto-extension). A bop database ATTACHed
// to a connection whose main database is not bop gets no waits (its
// commits behave as async without MaxLag). A connection's
// sqlite3.Conn.WALAutoCheckpoint call replaces the hook too.

// installHook sets the WAL hook of a connection whose main file is mf.
func installHook(c *sqlite3.Conn, mf *mainFile) {
	c.WALHook(func(db *sqlite3.Conn, schema string, pages int) error {
		f := mf
		if schema != "main" {
			f = bopFile(db, schema)
		}
		limit := mf.autoCheckpoint.Load()
		if f != nil {
			limit = f.autoCheckpoint.Load()
		}
		if limit > 0 && int64(pages) >= limit {
			// As SQLite's default hook: passive, errors ignored (a busy
			// checkpoint is retried at the next commit).
			db.WALCheckpoint(schema, sqlite3.CHECKPOINT_PASSIVE)
		}
		if f == nil {
			return nil
		}
		err := f.d.afterCommit(db.GetInterrupt(), f.committed)
		if err == nil {
			return nil
		}
		// The hook's own error reaches the caller as a bare result code.
		// An error a VFS method returns as an SQLite I/O error keeps its
		// Go error (ncruces' *sqlite3.Error unwraps to it) if no other VFS
		// call follows before the statement returns: so the error is
		// handed to a pragma of this schema, which returns it.
		// The statement's context may be what ended the wait (the error
		// says so): the pragma must run anyway, or the caller would see
		// SQLite's "interrupted", which says the statement did not happen,
		// for a commit that stands.
		f.hookErr = err
		interrupt := db.SetInterrupt(context.Background())
		perr := db.Exec("PRAGMA " + quoteIdent(schema) + "." + hookErrorPragma)
		db.SetInterrupt(interrupt)
		f.hookErr = nil
		if perr == nil {
			return err
		}
		return perr
	})
}

// hookErrorPragma returns (and clears) the error a WAL hook is reporting.
const hookErrorPragma = "bop_internal_commit_error"

// bopFile returns the bop main file of a connection's schema, or nil.
func bopFile(db *sqlite3.Conn, schema string) *mainFile {
	fp, err := db.FileControl(schema, sqlite3.FCNTL_FILE_POINTER)
	if err != nil {
		return nil
	}
	file, ok := fp.(vfs.File)
	if !ok {
		return nil
	}
	mf, _ := vfsutil.UnwrapFile[*mainFile](file)
	return mf
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// afterCommit runs in the WAL hook of a commit of txid (the newest txid in
// the spool when the committing connection's COMMIT_PHASETWO finalized
// it; maybe a later one): sync durability waits for the publish that
// contains it, async durability waits while the oldest unpublished
// transaction is older than MaxLag. ctx is the statement's (nil: none).
func (d *database) afterCommit(ctx context.Context, txid uint64) error {
	pub := d.pub.Load()
	if pub == nil {
		if err := d.ensurePublisher(); err != nil {
			if d.cfg.Durability == Sync {
				return fmt.Errorf("%w: txid %d: %w", ErrOutcomeUnknown, txid, err)
			}
			return nil
		}
		if pub = d.pub.Load(); pub == nil {
			return nil
		}
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if d.cfg.Durability == Sync {
		wctx, cancel := context.WithTimeout(ctx, d.cfg.SyncTimeout)
		defer cancel()
		err := pub.WaitPublished(wctx, txid)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, checkpoint.ErrFenced):
			return fmt.Errorf("%w: txid %d is committed locally but will never be published (another writer took the database over): %w", ErrFenced, txid, err)
		}
		return fmt.Errorf("%w: txid %d is committed locally; its publish failed and is retried: %w", ErrOutcomeUnknown, txid, err)
	}
	if pub.Lag() <= d.cfg.MaxLag {
		return nil
	}
	st := pub.Status()
	if st.Lag <= d.cfg.MaxLag || st.Fenced || st.Halted != nil {
		// A fenced writer's commits already fail; a halted publisher's
		// state is in the status: backpressure could only hang commits.
		return nil
	}
	d.lagWaits.Add(1)
	if err := pub.WaitLag(ctx, d.cfg.MaxLag); err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w: txid %d is committed locally; waiting for publishing to catch up (%v behind, MaxLag %v): %w",
			ErrOutcomeUnknown, txid, st.Lag.Round(time.Millisecond), d.cfg.MaxLag, err)
	}
	return nil
}

// autoCheckpointPragma answers PRAGMA wal_autocheckpoint for the
// connection's file f, as SQLite would: the threshold, after setting it.
func (f *mainFile) autoCheckpointPragma(value string) (string, error) {
	if v := strings.Trim(value, `'"`); v != "" {
		n, err := strconv.ParseInt(v, 0, 32)
		if err != nil {
			return "", fmt.Errorf("bop: wal_autocheckpoint=%s: not an integer", value)
		}
		f.autoCheckpoint.Store(max(n, 0))
	}
	return strconv.FormatInt(f.autoCheckpoint.Load(), 10), nil
}
