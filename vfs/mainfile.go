package vfs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/bopstore/bop/wal"
	"github.com/ncruces/go-sqlite3"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// mainFile is one connection's main database file: the page image.
// Reads pass through (or, for pages a sparse image never held, go to the
// remote at T_seed); writes pass through and feed the capture (writes
// outside a checkpoint are rollback-mode transactions, before WAL mode is
// on); every write is accounted by the seal.
type mainFile struct {
	fileForward
	d  *database
	cn *wal.Conn
	// mmap is decided at open, once: SQLite requires one mapper for the
	// life of the file, and a sparse image must not be mapped.
	mmap vfs.MemoryMapper
	// ckptErr: capture could not make the spool durable at CKPT_START;
	// the checkpoint's writes fail (SQLite then keeps the WAL) until
	// CKPT_DONE.
	ckptErr error

	// The connection's commit bookkeeping (hook.go); a main file belongs
	// to one connection, whose statements run one at a time.
	// autoCheckpoint is the connection's WAL auto-checkpoint threshold
	// for this database (PRAGMA wal_autocheckpoint); committed the txid
	// its last commit was spooled at; hookErr the error its WAL hook is
	// handing to SQLite.
	autoCheckpoint atomic.Int64
	committed      uint64
	hookErr        error
}

func newMainFile(d *database, base vfs.File) *mainFile {
	f := &mainFile{fileForward: fileForward{base}, d: d}
	f.autoCheckpoint.Store(int64(d.cfg.AutoCheckpoint))
	if d.img == nil {
		f.mmap = vfsutil.WrapMemoryMapper(base)
	}
	f.cn = d.capture.NewConn(f)
	return f
}

var (
	_ vfs.FileMemoryMapper = (*mainFile)(nil)
	_ wal.MainFile         = (*mainFile)(nil)
)

// MemoryMapper is the base file's, except on a sparse image.
func (f *mainFile) MemoryMapper() vfs.MemoryMapper { return f.mmap }

func (f *mainFile) sparse() *image {
	if img := f.d.img; img != nil && !img.complete.Load() {
		return img
	}
	return nil
}

func (f *mainFile) ReadAt(p []byte, off int64) (int, error) {
	if img := f.sparse(); img != nil {
		return img.readAt(f.d.ctx, f, p, off)
	}
	return f.File.ReadAt(p, off)
}

// readBase and writeBase are how a sparse image reaches the file.
func (f *mainFile) readBase(p []byte, off int64) (int, error) { return f.File.ReadAt(p, off) }
func (f *mainFile) writeBase(p []byte, off int64) error       { return f.d.writeImage(p, off) }

func (f *mainFile) WriteAt(p []byte, off int64) (int, error) {
	if f.ckptErr != nil {
		return 0, f.ckptErr
	}
	write := func() error {
		if err := f.d.seal.beginWrite(); err != nil {
			return err
		}
		_, err := f.File.WriteAt(p, off)
		f.d.seal.endWrite()
		return err
	}
	var err error
	if img := f.sparse(); img != nil {
		err = img.writeAt(f.d.ctx, f, p, off, write)
	} else {
		err = write()
	}
	if err != nil {
		return 0, err
	}
	if err := f.cn.MainWrite(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (f *mainFile) Truncate(size int64) error {
	if err := f.d.seal.beginWrite(); err != nil {
		return err
	}
	err := f.File.Truncate(size)
	f.d.seal.endWrite()
	if err == nil && f.d.img != nil {
		f.d.img.truncated(size)
	}
	return err
}

func (f *mainFile) Sync(flags vfs.SyncFlag) error {
	busy, gen := f.d.seal.busyGen()
	if err := f.File.Sync(flags); err != nil {
		return err
	}
	return f.d.afterMainSync(busy, gen)
}

// Unlock emits a rollback-mode transaction's direct writes before the
// lock drops (another connection may write as soon as it does).
func (f *mainFile) Unlock(lock vfs.LockLevel) error {
	var cerr error
	if lock <= vfs.LOCK_SHARED {
		cerr = f.cn.MainUnlock()
	}
	err := f.File.Unlock(lock)
	if cerr != nil {
		return cerr
	}
	return err
}

func (f *mainFile) Close() error {
	f.cn.Close()
	err := f.File.Close()
	if rerr := f.d.release(); err == nil {
		err = rerr
	}
	return err
}

// CommitPhaseTwo: SQLite ended a write transaction successfully (a hint;
// its error is ignored by SQLite, capture keeps its own).
func (f *mainFile) CommitPhaseTwo() error {
	err := vfsutil.WrapCommitPhaseTwo(f.File)
	if errors.Is(err, sqlite3.NOTFOUND) {
		err = nil
	}
	if cerr := f.cn.CommitPhaseTwo(); cerr != nil {
		return cerr
	}
	// The transaction is final and spooled: its txid is the spool's
	// newest (or older, if another connection committed meanwhile).
	if h, ok := f.d.spool.LastHeader(); ok {
		f.committed = h.Txid
		if pub := f.d.pub.Load(); pub != nil {
			pub.Notify(h.Txid)
		} else {
			f.d.noteCommit()
		}
	}
	return err
}

func (f *mainFile) CheckpointStart() {
	f.ckptErr = nil
	if err := f.cn.CheckpointStart(); err != nil {
		f.ckptErr = fmt.Errorf("bop: checkpoint refused, the spool could not be made durable: %w", err)
	}
	vfsutil.WrapCheckpointStart(f.File)
}

func (f *mainFile) CheckpointDone() {
	f.cn.CheckpointDone()
	vfsutil.WrapCheckpointDone(f.File)
	f.ckptErr = nil
	if img := f.d.img; img != nil {
		// A sparse image's marks are made durable now, whatever
		// PRAGMA synchronous says: SQLite may restart the WAL once the
		// checkpoint is complete.
		if err := f.d.mainFD.Sync(); err == nil {
			if err := img.persist(); err != nil && f.d.cfg.Logf != nil {
				f.d.cfg.Logf("bop: %s: persist image bitmap: %v", f.d.path, err)
			}
		}
	}
}

// Pragma answers bop's pragmas and vetoes journal modes other than WAL;
// everything else goes to the base file (then SQLite).
func (f *mainFile) Pragma(name, value string) (string, error) {
	switch name {
	case "journal_mode":
		if v := strings.Trim(value, `'"`); v != "" && !strings.EqualFold(v, "wal") {
			return "", fmt.Errorf("%w: journal_mode=%s refused for %s: bop captures every transaction from the WAL, so the database stays in WAL mode", ErrJournalMode, v, f.d.path)
		}
	case "bop_status":
		return f.d.statusJSON()
	case "bop_txid":
		return f.d.txidString(), nil
	case "bop_checkpoint":
		txid, err := f.d.publishNow(f.d.ctx)
		if err != nil {
			return "", fmt.Errorf("bop_checkpoint: %w", err)
		}
		return strconv.FormatUint(txid, 10), nil
	case "wal_autocheckpoint":
		// Answered here: SQLite would replace bop's WAL hook (hook.go).
		return f.autoCheckpointPragma(value)
	case hookErrorPragma:
		if err := f.hookErr; err != nil {
			f.hookErr = nil
			return "", vfs.SystemError(err, sqlite3.IOERR)
		}
		return "", nil
	default:
		if strings.HasPrefix(name, "bop_") {
			return "", fmt.Errorf("bop: unknown pragma %s (known: bop_status, bop_txid, bop_checkpoint)", name)
		}
	}
	return vfsutil.WrapPragma(f.File, name, value)
}

// Size implements wal.MainFile (and vfs.File, by embedding).
func (f *mainFile) Size() (int64, error) { return f.File.Size() }
