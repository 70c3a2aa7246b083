package manifest

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Apply applies one log record to the catalog in one SQLite transaction
// and advances the page map. It is the only way the catalog's remote state
// changes: the local writer (after its log record is created), OpenRemote
// and followers (after reading the record from the log) all come here.
//
// A record whose epoch is below the epoch of the nearest takeover record
// before it is void: it is recorded (so the seq is taken) and otherwise
// ignored. Any other record must satisfy every invariant listed on Record,
// or Apply returns ErrBadRecord and changes nothing.
func (c *Catalog) Apply(ctx context.Context, rec *Record) error {
	raw, err := EncodeRecord(rec)
	if err != nil {
		return err
	}
	return c.applyFrom(ctx, rec, raw, c.dirs)
}

// applyFrom is Apply with the record's stored bytes (their hash and size
// go into the publishes row) and a directory source.
func (c *Catalog) applyFrom(ctx context.Context, rec *Record, raw []byte, src DirectorySource) error {
	return c.applyRecord(ctx, rec, raw, src, false)
}

// checkRecord runs Apply's whole transaction, page map included, and
// rolls it back: a record that passes will apply. The writer calls it
// before creating the log record, so a bad record writes nothing,
// locally or remotely.
func (c *Catalog) checkRecord(ctx context.Context, rec *Record, raw []byte, src DirectorySource) error {
	return c.applyRecord(ctx, rec, raw, src, true)
}

func (c *Catalog) applyRecord(ctx context.Context, rec *Record, raw []byte, src DirectorySource, dryRun bool) error {
	if err := rec.checkShape(); err != nil {
		return err
	}
	c.mu.Lock()
	m0, closed := c.meta, c.closed
	c.mu.Unlock()
	if closed {
		return fmt.Errorf("manifest: catalog %s is closed", c.path)
	}
	void := isVoid(rec, m0) // the fence only rises: void stays void

	// Directories are fetched and checked before the transaction, without
	// the lock: no network I/O inside a catalog transaction.
	dirs := map[uint64][]byte{}
	decoded := map[uint64][]dirEntry{}
	if !void {
		for i := range rec.Added {
			o := &rec.Added[i]
			blob := o.Directory
			if blob == nil && o.Kind == ObjectDelta {
				if src == nil {
					return fmt.Errorf("manifest: apply seq %d: delta object %d carries no directory and the catalog has no directory source", rec.Seq, o.ID)
				}
				var err error
				if blob, err = src.Directory(ctx, *o); err != nil {
					return fmt.Errorf("manifest: apply seq %d: directory of object %d (%s): %w", rec.Seq, o.ID, o.Key, err)
				}
			}
			if blob == nil {
				continue // a base: frames are arithmetic from the chunk's first page
			}
			ref := addedRef(o, rec.Seq)
			ents, err := decodeDir(fmt.Sprintf("directory of object %d (%s)", o.ID, o.Key), blob, ref, rec.PageSize)
			if err != nil {
				return fmt.Errorf("manifest: apply seq %d: %w", rec.Seq, err)
			}
			if err := checkDirChunks(o, ents, rec.ChunkPages); err != nil {
				return fmt.Errorf("%w: seq %d: %v", ErrBadRecord, rec.Seq, err)
			}
			if o.Kind == ObjectDelta {
				dirs[o.ID], decoded[o.ID] = blob, ents
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	m := c.meta
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: seq %d: %s", ErrBadRecord, rec.Seq, fmt.Sprintf(format, args...))
	}
	if rec.Seq != m.tipSeq+1 {
		return bad("catalog tip is %d: records apply in seq order", m.tipSeq)
	}
	if rec.PageSize != m.pageSize || rec.ChunkPages != m.chunkPages {
		return bad("page size %d / chunk pages %d, catalog has %d / %d", rec.PageSize, rec.ChunkPages, m.pageSize, m.chunkPages)
	}
	void = isVoid(rec, m)
	next := m
	next.tipSeq = rec.Seq
	if !void {
		if rec.Parent != (Parent{Seq: m.lastSeq, Txid: m.lastTxid}) {
			return bad("parent (seq %d, txid %d), but the newest record is (seq %d, txid %d)", rec.Parent.Seq, rec.Parent.Txid, m.lastSeq, m.lastTxid)
		}
		switch rec.Kind {
		case KindTakeover:
			if rec.Epoch <= m.fenceEpoch {
				return bad("takeover by %s with epoch %d, not above the current epoch %d (writer %s)", rec.Writer, rec.Epoch, m.fenceEpoch, m.writer)
			}
			next.fenceEpoch = rec.Epoch
		default:
			if rec.Epoch != m.fenceEpoch {
				return bad("%s by epoch %d, but the current takeover epoch is %d", rec.Kind, rec.Epoch, m.fenceEpoch)
			}
		}
		if rec.Kind != KindPublish && rec.DBPages != m.dbPages {
			return bad("%s record with db size %d, parent has %d", rec.Kind, rec.DBPages, m.dbPages)
		}
		next.lastSeq, next.lastTxid, next.dbPages = rec.Seq, rec.Txid, rec.DBPages
		next.epoch, next.writer = rec.Epoch, rec.Writer
	}
	key := m.layout.Log(rec.Seq)
	var snap *Snapshot
	err := c.tx(func() error {
		shrink := !void && rec.DBPages < m.dbPages
		if err := c.exec(`INSERT INTO publishes (seq, kind, epoch, writer, job, parent_seq, parent_txid, txid, db_pages,
			shrink, compaction, created_ms, log_key, log_hash, log_size, void) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
			rec.Seq, rec.Kind, rec.Epoch, rec.Writer, rec.Job, rec.Parent.Seq, rec.Parent.Txid, rec.Txid, rec.DBPages,
			shrink, rec.Compaction, rec.CreatedMs, key, Hash(xxhash.Sum64(raw)), len(raw), void); err != nil {
			return err
		}
		if !void {
			if err := c.applyObjects(rec, m, dirs); err != nil {
				return err
			}
		}
		if c.applyHook != nil {
			stage := "apply"
			if dryRun {
				stage = "check"
			}
			if err := c.applyHook(stage); err != nil {
				return err
			}
		}
		if err := c.exec(`UPDATE meta SET tip_seq = ?, last_seq = ?, last_txid = ?, db_pages = ?, epoch = ?, writer = ?,
			fence_epoch = ? WHERE id = 1`, next.tipSeq, next.lastSeq, next.lastTxid, next.dbPages, next.epoch, next.writer,
			next.fenceEpoch); err != nil {
			return err
		}
		what := "apply " + rec.Kind
		if void {
			what = "apply void " + rec.Kind
		}
		if err := c.logChange(what, fmt.Sprintf("seq %d epoch %d writer %s job %s txid %d pages %d +%d -%d",
			rec.Seq, rec.Epoch, rec.Writer, rec.Job, rec.Txid, rec.DBPages, len(rec.Added), len(rec.Retired))); err != nil {
			return err
		}
		var err error
		c.meta = next // the builder reads meta; restored below on failure
		if snap, err = c.advance(c.snap.Load(), rec, void, decoded); err != nil {
			return err
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if dryRun && err == errDryRun {
		c.meta = m
		return nil
	}
	if err != nil {
		c.meta = m
		var e error = err
		if errors.Is(err, ErrBadRecord) || errors.Is(err, ErrCorrupt) {
			return e
		}
		return fmt.Errorf("manifest: apply seq %d: %w", rec.Seq, err)
	}
	c.snap.Store(snap)
	return nil
}

var errDryRun = errors.New("dry run")

// isVoid: a record is void if its epoch is below the epoch of the nearest
// takeover record before it (DESIGN section 6), or equal to it but written
// by another writer than that takeover's. The second case cannot arise
// when epochs are unique (head bumps with an atomic If-Match); it makes
// the first takeover with a shared epoch win, so a store with unreliable
// If-Match cannot let two writers' records in.
func isVoid(rec *Record, m meta) bool {
	if m.fenceEpoch == 0 {
		return false
	}
	return rec.Epoch < m.fenceEpoch || rec.Epoch == m.fenceEpoch && rec.Writer != m.writer
}

// applyObjects writes the object rows of a non-void publish.
func (c *Catalog) applyObjects(rec *Record, m meta, dirs map[uint64][]byte) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: seq %d: %s", ErrBadRecord, rec.Seq, fmt.Sprintf(format, args...))
	}
	for i := range rec.Added {
		o := &rec.Added[i]
		want, err := m.layout.Object(o.Kind, o.ID, uint64(o.Hash))
		if err != nil {
			return bad("%v", err)
		}
		if o.Key != want {
			return bad("object %d has key %q, the layout's key is %q", o.ID, o.Key, want)
		}
		exists, err := c.queryOne("SELECT 1 FROM objects WHERE id = ? OR key = ?", []any{o.ID, o.Key}, func(*sqliteStmt) error { return nil })
		if err != nil {
			return err
		}
		if exists {
			return bad("object %d (%s) already exists", o.ID, o.Key)
		}
		if err := c.exec(`INSERT INTO objects (id, kind, key, size, hash, first_pgno, page_count, min_txid, max_txid,
			created_seq, rec_pos) VALUES (?,?,?,?,?,?,?,?,?,?,?)`, o.ID, o.Kind, o.Key, o.Size, o.Hash, o.FirstPgno,
			o.PageCount, o.MinTxid, o.MaxTxid, rec.Seq, i); err != nil {
			return err
		}
		for _, ch := range o.Chunks {
			if err := c.exec("INSERT INTO object_chunks (chunk, object_id, created_seq) VALUES (?,?,?)", ch, o.ID, rec.Seq); err != nil {
				return err
			}
		}
		if blob, ok := dirs[o.ID]; ok {
			if err := c.exec("INSERT INTO directories (object_id, entries) VALUES (?,?)", o.ID, blob); err != nil {
				return err
			}
		}
		if id := o.ID + 1; id > c.meta.nextObjectID {
			if err := c.exec("UPDATE meta SET next_object_id = ? WHERE id = 1", id); err != nil {
				return err
			}
		}
	}
	for _, r := range rec.Retired {
		for _, ch := range r.Chunks {
			if err := c.exec("UPDATE object_chunks SET retired_seq = ? WHERE object_id = ? AND chunk = ? AND retired_seq IS NULL",
				rec.Seq, r.ID, ch); err != nil {
				return err
			}
			if c.conn.Changes() != 1 {
				return bad("retires object %d for chunk %d, which has no live reference", r.ID, ch)
			}
		}
		var live bool
		if _, err := c.queryOne("SELECT 1 FROM object_chunks WHERE object_id = ? AND retired_seq IS NULL LIMIT 1", []any{r.ID},
			func(*sqliteStmt) error { live = true; return nil }); err != nil {
			return err
		}
		if !live {
			if err := c.exec("UPDATE objects SET retired_seq = ? WHERE id = ?", rec.Seq, r.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkDirChunks checks that a directory's pages fall in exactly the
// chunks the record lists.
func checkDirChunks(o *ObjectAdded, ents []dirEntry, chunkPages uint32) error {
	var chunks []uint32
	for _, e := range ents {
		ch := chunkOf(e.pgno, chunkPages)
		if len(chunks) == 0 || chunks[len(chunks)-1] != ch {
			chunks = append(chunks, ch)
		}
	}
	if !slices.Equal(chunks, o.Chunks) {
		return fmt.Errorf("object %d: directory pages fall in chunks %v, record lists %v", o.ID, chunks, o.Chunks)
	}
	return nil
}

func addedRef(o *ObjectAdded, seq uint64) *ObjectRef {
	return &ObjectRef{ID: o.ID, Kind: o.Kind, Key: o.Key, Size: o.Size, Hash: uint64(o.Hash), FirstPgno: o.FirstPgno,
		PageCount: o.PageCount, MaxTxid: o.MaxTxid, CreatedSeq: seq}
}

// advance builds the page map after rec from prev, copy-on-write: only
// the chunks rec touches (and the one its db size cuts) are new.
func (c *Catalog) advance(prev *Snapshot, rec *Record, void bool, decoded map[uint64][]dirEntry) (*Snapshot, error) {
	next := *prev
	next.seq = rec.Seq
	if void {
		return &next, nil
	}
	next.lastSeq, next.txid, next.requested, next.dbPages = rec.Seq, rec.Txid, rec.Txid, rec.DBPages
	if rec.Kind != KindPublish {
		return &next, nil
	}
	chunks := slices.Clone(prev.chunks)
	grow := func(ch uint32) {
		if int(ch) >= len(chunks) {
			chunks = append(chunks, make([]*chunkMap, int(ch)+1-len(chunks))...)
		}
	}
	rebuild := map[uint32]bool{}
	cp := c.meta.chunkPages
	for _, i := range rec.addedByAge() {
		o := &rec.Added[i]
		if o.MaxTxid <= prev.txid {
			// Older than the newest state (a compaction): the layer order
			// of its chunks changes, rebuild them from the rows.
			for _, ch := range o.Chunks {
				rebuild[ch] = true
			}
			continue
		}
		ref := addedRef(o, rec.Seq)
		for _, ch := range o.Chunks {
			if rebuild[ch] {
				continue
			}
			grow(ch)
			if o.Kind == ObjectBase {
				chunks[ch] = &chunkMap{base: ref, baseFrames: o.PageCount}
				continue
			}
			first := chunkFirst(ch, cp)
			chunks[ch] = mergeDelta(chunks[ch], ref, entriesIn(decoded[o.ID], first, chunkLast(ch, cp)), first, cp)
		}
	}
	for _, r := range rec.Retired {
		for _, ch := range r.Chunks {
			if int(ch) < len(chunks) && chunks[ch].references(r.ID) {
				rebuild[ch] = true // a visible layer goes away: what is below shows
			}
		}
	}
	if len(rebuild) > 0 {
		b := c.newBuilder(rec.Seq)
		for ch := range rebuild {
			cm, err := b.chunkFromRows(ch)
			if err != nil {
				return nil, err
			}
			grow(ch)
			chunks[ch] = cm
		}
	}
	next.chunks = maskChunks(chunks, rec.DBPages, cp)
	return &next, nil
}
