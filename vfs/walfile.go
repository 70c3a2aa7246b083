package vfs

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/bopstore/bop/internal/fdsync"
	"github.com/bopstore/bop/wal"
	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/vfs"
)

// walFile is one connection's -wal file. Every write, truncation and sync
// goes to the base file first and is then reported to the capture, which
// turns the stream into spooled transactions (package wal).
type walFile struct {
	fileForward
	d  *database
	cn *wal.Conn
	// hdrUnsynced: this connection wrote a WAL header that no fsync of
	// the WAL has covered yet (WriteAt).
	hdrUnsynced bool
}

func (f *walFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.d.fenced(); err != nil {
		// Another writer owns the database: no transaction may commit
		// (SQLite rolls this one back). The code is ErrFenced's: it is
		// what reaches the caller (see ErrFenced).
		return 0, vfs.SystemError(err, fencedCode)
	}
	if off == 0 {
		// A WAL header: SQLite (re)starts the WAL, over the frames of
		// the generation it ends (beforeWALReuse, mainfile.go).
		if err := f.d.beforeWALReuse("WAL restart of " + f.d.path); err != nil {
			return 0, err
		}
	}
	if off != 0 && f.hdrUnsynced {
		// A restarted WAL's header must be durable before the new
		// generation's first frame overwrites the old one's: a power
		// loss that kept such frames but lost the header would leave
		// the old header's checksum chain validating a prefix of the old
		// generation, older than the main file, which SQLite would read
		// (and reconciliation refuses as a WAL changed outside bop).
		// SQLite fsyncs the header itself right after writing it, except
		// with synchronous=OFF: then this is one fsync per WAL restart
		// (TestPowerLossVFS/off, TestWALHeaderDurableBeforeFrames).
		if err := f.File.Sync(vfs.SYNC_NORMAL); err != nil {
			return 0, err
		}
		f.hdrUnsynced = false
	}
	n, err := f.File.WriteAt(p, off)
	if err != nil {
		// SQLite rolls its transaction back; if this was a commit's
		// padding, capture withdraws the commit (wal.Conn.WriteFailed).
		f.cn.WriteFailed(off)
		return n, err
	}
	if off == 0 {
		f.hdrUnsynced = true
	}
	// p aliases SQLite's memory: capture copies what it keeps. An error
	// fails SQLite's write, which rolls the transaction back.
	if err := f.cn.Write(p, off); err != nil {
		return 0, writeErr(err)
	}
	return n, nil
}

// writeErr gives a capture error the result code that reaches the
// caller through SQLite's rollback: a spool that stayed full is
// ErrSpoolFull (SQLITE_FULL), and a statement that gave up waiting for it
// is interrupted (SQLITE_INTERRUPT: its transaction did not happen).
func writeErr(err error) error {
	switch {
	case !errors.Is(err, wal.ErrSpoolFull):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return vfs.SystemError(err, sqlite3.INTERRUPT)
	}
	return vfs.SystemError(err, spoolFullCode)
}

func (f *walFile) Truncate(size int64) error {
	if size < walHeaderSize {
		// The WAL's frames go: a generation end (beforeWALReuse).
		if err := f.d.beforeWALReuse("WAL truncation of " + f.d.path); err != nil {
			return err
		}
	}
	// Frames capture reads back must not go with the cut (wal.ReadBack).
	if err := f.cn.BeforeTruncate(size); err != nil {
		return err
	}
	if err := f.File.Truncate(size); err != nil {
		return err
	}
	return f.cn.Truncate(size)
}

func (f *walFile) Sync(flags vfs.SyncFlag) error {
	err := f.cn.Sync(func() error { return f.File.Sync(flags) })
	if err == nil {
		f.hdrUnsynced = false
	}
	return err
}

func (f *walFile) Close() error {
	f.cn.DetachWAL()
	return f.File.Close()
}

// walHeaderSize is the size of SQLite's WAL header.
const walHeaderSize = 32

// walHandle is capture's handle on a connection's WAL (wal.WALFile).
type walHandle struct {
	f    vfs.File
	name string
	dir  *atomic.Bool // the WAL's directory was fsynced through this handle
}

func (h walHandle) ReadAt(p []byte, off int64) (int, error) { return h.f.ReadAt(p, off) }
func (h walHandle) Size() (int64, error)                    { return h.f.Size() }

// Sync is called by capture from other goroutines than the connection's
// (a checkpoint, the publisher): through the descriptor, not the file's
// own Sync, which is not safe for concurrent use (internal/fdsync).
func (h walHandle) Sync() error {
	if ok, err := fdsync.File(h.f, h.name, h.dir); ok {
		return err
	}
	return h.f.Sync(vfs.SYNC_FULL)
}
func (h walHandle) Name() string { return h.name }
