package manifest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
	"github.com/ncruces/go-sqlite3"
)

// Remote catalog snapshots: manifest/<seq>.db is a plain SQLite file, the
// catalog as of record seq with the local tables emptied. head records its
// seq, size and xxhash64; OpenRemote verifies both before opening it.

// MaybeSnapshot uploads a catalog snapshot if SnapshotEvery records or
// SnapshotBytes bytes of log were written since the last one. It reports
// whether it uploaded.
func (w *Writer) MaybeSnapshot(ctx context.Context) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return false, err
	}
	var since uint64
	if w.head.Snapshot != nil {
		since = w.head.Snapshot.Seq
	}
	n, bytes, err := w.cat.logSince(since)
	if err != nil {
		return false, err
	}
	if n < w.opts.SnapshotEvery && bytes < w.opts.SnapshotBytes {
		return false, nil
	}
	return true, w.snapshotLocked(ctx)
}

// UploadSnapshot uploads a catalog snapshot now.
func (w *Writer) UploadSnapshot(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return err
	}
	return w.snapshotLocked(ctx)
}

func (w *Writer) writable() error {
	if w.fenced != nil {
		return w.fenced
	}
	if w.epoch == 0 {
		return ErrNotWriter
	}
	return nil
}

func (w *Writer) snapshotLocked(ctx context.Context) error {
	if err := w.settle(ctx); err != nil {
		return err
	}
	if err := w.writable(); err != nil { // settle may have fenced
		return err
	}
	tmp := w.cat.Path() + ".snapshot.tmp"
	defer os.Remove(tmp)
	seq, err := w.cat.writeSnapshot(tmp)
	if err != nil {
		return err
	}
	if w.head.Snapshot != nil && w.head.Snapshot.Seq >= seq {
		return nil // nothing new since the last one
	}
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("manifest: snapshot: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("manifest: snapshot: %w", err)
	}
	key := w.layout.Snapshot(seq)
	ref := SnapshotRef{Seq: seq}
	res, err := w.store.Put(ctx, key, f, remote.PutOptions{IfNoneMatch: true, Size: st.Size()})
	switch {
	case err == nil:
		ref.Size, ref.Hash = res.Size, Hash(res.XXH64)
		if ref.Size != st.Size() {
			return fmt.Errorf("manifest: put %s: stored %d bytes of %d", key, ref.Size, st.Size())
		}
	case errors.Is(err, remote.ErrPrecondition) || !errors.Is(err, context.Canceled):
		// Already there (our own put whose response was lost: the
		// client's retry is refused by it), or an unknown outcome: use
		// what the store holds if it is exactly our file. Anything else
		// at the key (another catalog's snapshot at the same seq, bytes
		// rotted since) head must not vouch for: its hash would make a
		// corrupt snapshot pass every check.
		size, sum, herr := hashObject(ctx, w.store, key)
		if herr != nil {
			return fmt.Errorf("manifest: put %s: %w (reading it back: %v)", key, err, herr)
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("manifest: snapshot: %w", err)
		}
		d := xxhash.New()
		if _, err := io.Copy(d, f); err != nil {
			return fmt.Errorf("manifest: snapshot: %w", err)
		}
		if size != st.Size() || sum != d.Sum64() {
			return fmt.Errorf("manifest: put %s: %w, and the object there is not this snapshot (%d bytes, hash %s; this one %d bytes, hash %s): head keeps its snapshot",
				key, err, size, Hash(sum), st.Size(), Hash(d.Sum64()))
		}
		ref.Size, ref.Hash = size, Hash(sum)
	default:
		return fmt.Errorf("manifest: put %s: %w", key, err)
	}
	next := w.head
	next.Snapshot = &ref
	next.RenewedMs = w.opts.Now().UnixMilli()
	if err := w.putOwnHead(ctx, next); err != nil {
		return err
	}
	return w.cat.setSnapshotSeq(seq)
}

// hashObject streams an object and returns its size and xxhash64.
func hashObject(ctx context.Context, store remote.Store, key string) (int64, uint64, error) {
	rc, _, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return 0, 0, err
	}
	defer rc.Close()
	d := xxhash.New()
	n, err := io.Copy(d, rc)
	if err != nil {
		return 0, 0, err
	}
	return n, d.Sum64(), nil
}

// logSince counts records and log bytes after seq.
func (c *Catalog) logSince(seq uint64) (int, int64, error) {
	if err := c.lock(); err != nil {
		return 0, 0, err
	}
	defer c.mu.Unlock()
	var n int
	var b int64
	_, err := c.queryOne("SELECT count(*), coalesce(sum(log_size), 0) FROM publishes WHERE seq > ?", []any{seq},
		func(st *sqlite3.Stmt) error { n, b = st.ColumnInt(0), st.ColumnInt64(1); return nil })
	return n, b, err
}

func (c *Catalog) setSnapshotSeq(seq uint64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	err := c.tx(func() error {
		if err := c.exec("UPDATE meta SET snapshot_seq = ? WHERE id = 1", seq); err != nil {
			return err
		}
		return c.logChange("snapshot", fmt.Sprintf("seq %d", seq))
	})
	if err == nil {
		c.meta.snapshotSeq = seq
	}
	return err
}

// writeSnapshot writes the catalog as of its tip to path (VACUUM INTO),
// with the local tables emptied, as one plain rollback-journal file. It
// returns the tip seq.
func (c *Catalog) writeSnapshot(path string) (uint64, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, err
	}
	if err := c.lock(); err != nil {
		return 0, err
	}
	seq := c.meta.tipSeq
	err := c.exec("VACUUM INTO ?", path)
	c.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("manifest: snapshot: %w", err)
	}
	conn, err := sqlite3.Open(path)
	if err != nil {
		return 0, fmt.Errorf("manifest: snapshot: %w", err)
	}
	defer conn.Close()
	// sqlite_sequence too: the local changes table's AUTOINCREMENT
	// counter would make two snapshots of one seq differ by the local
	// changes made between them (snapshotLocked compares a snapshot it
	// finds at its key with its own, byte for byte).
	q := "PRAGMA journal_mode = DELETE; BEGIN; DELETE FROM sqlite_sequence;"
	for _, t := range localTables {
		q += "DELETE FROM " + t + ";"
	}
	q += fmt.Sprintf("UPDATE meta SET next_object_id = 1, snapshot_seq = %d; COMMIT; VACUUM;", seq)
	if err := conn.Exec(q); err != nil {
		return 0, fmt.Errorf("manifest: snapshot: clear local tables: %w", err)
	}
	return seq, nil
}

// OpenRemote builds a catalog at localPath (which must not exist) from the
// store alone: GET head, GET the snapshot it names (size and hash
// verified), then GET log records after it until 404. No LIST. The page
// map is built from the directories inside the snapshot, so a cold open
// fetches no object except the directories of deltas published after the
// snapshot. opts.Layout is set to layout; opts.Directories defaults to
// reading the objects from store.
func OpenRemote(ctx context.Context, store remote.Store, layout remote.Layout, localPath string, opts Options) (*Catalog, error) {
	cat, _, err := openRemote(ctx, store, layout, localPath, opts, false)
	return cat, err
}

// Damage says where a catalog built from a damaged store stops short of
// the store's head: the record at Seq (and so every one after it) could
// not be read or applied, for the reason in Err.
type Damage struct {
	Seq uint64 // the first record not applied
	Err error
}

func (d *Damage) Error() string { return fmt.Sprintf("seq %d: %v", d.Seq, d.Err) }
func (d *Damage) Unwrap() error { return d.Err }

// OpenRemotePartial is OpenRemote for inspecting a store that may be
// damaged (the CLI's status, verify and restore): where a log record is
// missing or does not verify, or the directory of a delta object a record
// adds cannot be read, twice in a row, it stops at the record before and
// reports the rest as Damage, instead of failing. The catalog then holds
// exactly the records before Damage.Seq, so every boundary it answers for
// is the one the intact store would; boundaries from Damage.Seq on are
// unknown (a later record may change any page). Objects it does not read
// (bases, page frames) may still be damaged: restore and delta.Verify
// find that. Damage is nil when the whole log applied. Errors that say
// nothing of the store's content (a missing or corrupt head or snapshot,
// the context, a cut stream, the local disk) still fail the open.
func OpenRemotePartial(ctx context.Context, store remote.Store, layout remote.Layout, localPath string, opts Options) (*Catalog, *Damage, error) {
	return openRemote(ctx, store, layout, localPath, opts, true)
}

func openRemote(ctx context.Context, store remote.Store, layout remote.Layout, localPath string, opts Options, partial bool) (_ *Catalog, _ *Damage, err error) {
	if _, err := os.Stat(localPath); !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("manifest: OpenRemote: %s already exists (stat: %v)", localPath, err)
	}
	head, _, err := GetHead(ctx, store, layout)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest: OpenRemote %s: %w", layout.Root(), err)
	}
	opts.Layout, opts.PageSize, opts.ChunkPages = layout, head.PageSize, head.ChunkPages
	if opts.Directories == nil {
		opts.Directories = StoreDirectories{Store: store}
	}
	defer func() {
		if err != nil {
			removeCatalogFiles(localPath)
		}
	}()
	var cat *Catalog
	var sd *SnapshotDamage
	if s := head.Snapshot; s == nil {
		if cat, err = Open(localPath, opts); err != nil {
			return nil, nil, err
		}
	} else if cat, err = openSnapshot(ctx, store, layout, localPath, s, opts); err != nil {
		if ctx.Err() == nil && isStoreDamage(err) {
			// Read it again: a fault of the transport (a body cut
			// short reads as a short snapshot) is not damage.
			removeCatalogFiles(localPath)
			cat, err = openSnapshot(ctx, store, layout, localPath, s, opts)
		}
	}
	if err != nil {
		if ctx.Err() != nil || !isStoreDamage(err) {
			return nil, nil, err
		}
		s := head.Snapshot
		// A snapshot is a copy of what the log says up to its seq: the
		// catalog can be built from the whole log instead, if every
		// record (never deleted) and the directory of every object the
		// records add (bop deletes none yet; a collector would) are
		// still there; readLog says if not.
		sd = &SnapshotDamage{Seq: s.Seq, Err: err}
		removeCatalogFiles(localPath)
		if cat, err = Open(localPath, opts); err != nil {
			return nil, nil, err
		}
		cat.snapDamage = sd
	}
	err = readLog(ctx, cat, store, layout, head)
	if err != nil && partial && ctx.Err() == nil && isStoreDamage(err) {
		// Confirm before calling it damage: a second read from the same
		// record rules out a one-off fault of the transport.
		err = readLog(ctx, cat, store, layout, head)
	}
	if err == nil {
		return cat, nil, nil
	}
	if sd != nil {
		err = fmt.Errorf("%w (the catalog was rebuilt without head's snapshot: %v)", err, sd)
	}
	// Only what the store holds is damage: a cancelled context, a closed
	// catalog or a local disk error says nothing about the store.
	if partial && ctx.Err() == nil && isStoreDamage(err) {
		return cat, &Damage{Seq: cat.Tip().Seq + 1, Err: err}, nil
	}
	cat.Close()
	return nil, nil, err
}

// SnapshotDamage says that the catalog snapshot head names (at Seq) could
// not be used (missing or corrupt: Err), and that the catalog was built
// from the whole log instead. A catalog built so is the one the snapshot
// would have given: a snapshot is a copy of what the log says up to its
// seq. Older snapshots are not tried: head vouches (size and hash) only
// for its own, and a bit flipped in a catalog's rows passes SQLite's own
// checks. Catalog.SnapshotDamage returns it.
type SnapshotDamage struct {
	Seq uint64
	Err error
}

func (d *SnapshotDamage) Error() string {
	return fmt.Sprintf("snapshot at seq %d unusable (%v); catalog rebuilt from the whole log", d.Seq, d.Err)
}

func (d *SnapshotDamage) Unwrap() error { return d.Err }

// SnapshotDamage is not nil if OpenRemote built c without the snapshot
// head names.
func (c *Catalog) SnapshotDamage() *SnapshotDamage { return c.snapDamage }

// openSnapshot downloads the snapshot ref names to path (its size and hash
// checked) and opens it.
func openSnapshot(ctx context.Context, store remote.Store, layout remote.Layout, path string, ref *SnapshotRef, opts Options) (*Catalog, error) {
	key := layout.Snapshot(ref.Seq)
	if err := download(ctx, store, key, path, ref); err != nil {
		return nil, err
	}
	cat, err := Open(path, opts)
	if err != nil {
		return nil, err
	}
	if cat.Tip().Seq != ref.Seq {
		cat.Close()
		return nil, corruptf(key, "snapshot holds records up to seq %d, head says %d", cat.Tip().Seq, ref.Seq)
	}
	return cat, nil
}

func removeCatalogFiles(path string) {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + ".download"} {
		os.Remove(p)
	}
}

// readLog applies the log records after the catalog's tip up to the end
// of the log, and checks that the end is the end. Writers never leave a
// gap (a record is created only after the one before it), but head may
// lag the log (a crash or a failed head write after a record), so neither
// the first missing seq nor head marks the end on its own: a record after
// a missing one means the missing one was lost. Seeing seq tip+2 makes
// the log read again from tip+1, which a live writer created before
// tip+2; only if it is still missing is it damage.
func readLog(ctx context.Context, cat *Catalog, store remote.Store, layout remote.Layout, head *Head) error {
	probed := uint64(0)
	for {
		if _, err := cat.Refresh(ctx, store); err != nil {
			return err
		}
		tip := cat.Tip().Seq
		_, err := store.Head(ctx, layout.Log(tip+2))
		if errors.Is(err, remote.ErrNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("manifest: head %s: %w", layout.Log(tip+2), err)
		}
		if probed == tip+2 {
			return corruptf(layout.Log(tip+1), "missing, but seq %d after it exists", tip+2)
		}
		probed = tip + 2
	}
	// head's seq may lag its snapshot's (a takeover record does not
	// advance head, nor a publish while head is held): the log reaches
	// both. With the snapshot used, the catalog starts there; without it
	// (SnapshotDamage), a log lost past head.Seq would otherwise end the
	// catalog early without a word.
	want, what := head.Seq, "head says"
	if s := head.Snapshot; s != nil && s.Seq > want {
		want, what = s.Seq, "head's snapshot is at"
	}
	if tip := cat.Tip(); tip.Seq < want {
		return corruptf(layout.Log(tip.Seq+1), "missing: the log ends at seq %d but %s %d", tip.Seq, what, want)
	}
	return nil
}

// isStoreDamage reports errors that describe what the store holds: a
// missing, corrupt, unparseable or too new record or object.
func isStoreDamage(err error) bool {
	for _, e := range []error{ErrCorrupt, ErrBadRecord, ErrFormatTooNew, remote.ErrNotFound, delta.ErrCorrupt, delta.ErrVersion} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// download streams key to path, checking size and hash against ref.
func download(ctx context.Context, store remote.Store, key, path string, ref *SnapshotRef) error {
	tmp := path + ".download"
	rc, _, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		return fmt.Errorf("manifest: get %s: %w", key, err)
	}
	defer rc.Close()
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	defer os.Remove(tmp)
	d := xxhash.New()
	// Read at most one byte more than expected: a longer object is
	// corrupt, and memory stays bounded either way.
	n, err := io.Copy(io.MultiWriter(f, d), io.LimitReader(rc, ref.Size+1))
	if err != nil {
		f.Close()
		return fmt.Errorf("manifest: get %s: %w", key, err)
	}
	if n != ref.Size {
		f.Close()
		return corruptf(key, "snapshot is %d bytes, head says %d", n, ref.Size)
	}
	if got := Hash(d.Sum64()); got != ref.Hash {
		f.Close()
		return corruptf(key, "snapshot hash %s, head says %s", got, ref.Hash)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
