package manifest

import (
	"fmt"

	"github.com/bopstore/bop/delta"
	"github.com/ncruces/go-sqlite3"
)

// SnapshotAt returns the page map at boundary txid. A txid between two
// boundaries rounds down to the boundary at or below it, and the snapshot
// says so (Rounded, Requested). Older boundaries are built from the
// catalog rows and stored directories (the cost of that boundary's state);
// a txid below the retained history is ErrSnapshotTooOld.
func (c *Catalog) SnapshotAt(txid uint64) (*Snapshot, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	if txid < c.meta.historyFloor {
		return nil, fmt.Errorf("%w: txid %d is below the retained history (from txid %d)", ErrSnapshotTooOld, txid, c.meta.historyFloor)
	}
	cur := c.snap.Load()
	if txid >= cur.txid {
		s := *cur
		s.requested = txid
		return &s, nil
	}
	var seq uint64
	if _, err := c.queryOne("SELECT coalesce(max(seq), 0) FROM publishes WHERE void = 0 AND txid <= ?", []any{txid},
		func(st *sqlite3.Stmt) error { seq = colU64(st, 0); return nil }); err != nil {
		return nil, err
	}
	s, err := c.buildFull(seq, seq)
	if err != nil {
		return nil, err
	}
	s.requested = txid
	return s, nil
}

// SetHistoryFloor records that boundaries below txid are out of retention
// (GC may delete what only they need). It never moves down.
func (c *Catalog) SetHistoryFloor(txid uint64) error {
	if err := c.lock(); err != nil {
		return err
	}
	defer c.mu.Unlock()
	if txid <= c.meta.historyFloor {
		return nil
	}
	err := c.tx(func() error {
		if err := c.exec("UPDATE meta SET history_floor_txid = ? WHERE id = 1", txid); err != nil {
			return err
		}
		return c.logChange("history floor", fmt.Sprintf("txid %d", txid))
	})
	if err == nil {
		c.meta.historyFloor = txid
	}
	return err
}

// Object is a catalog object row.
type Object struct {
	ObjectRef
	MinTxid    uint64
	RetiredSeq uint64 // 0: still referenced by some chunk
	Chunks     []ChunkRef
}

// ChunkRef is one (object, chunk) reference.
type ChunkRef struct {
	Chunk      uint32
	CreatedSeq uint64
	RetiredSeq uint64 // 0: live
}

const objectCols = "o.id, o.kind, o.key, o.size, o.hash, o.first_pgno, o.page_count, o.max_txid, o.created_seq, o.min_txid, coalesce(o.retired_seq, 0)"

func scanObject(st *sqlite3.Stmt) Object {
	return Object{ObjectRef: ObjectRef{ID: colU64(st, 0), Kind: st.ColumnText(1), Key: st.ColumnText(2), Size: st.ColumnInt64(3),
		Hash: colU64(st, 4), FirstPgno: colU32(st, 5), PageCount: colU32(st, 6), MaxTxid: colU64(st, 7), CreatedSeq: colU64(st, 8)},
		MinTxid: colU64(st, 9), RetiredSeq: colU64(st, 10)}
}

// Object returns one object with its chunk references.
func (c *Catalog) Object(id uint64) (Object, error) {
	if err := c.lock(); err != nil {
		return Object{}, err
	}
	defer c.mu.Unlock()
	var o Object
	found, err := c.queryOne("SELECT "+objectCols+" FROM objects o WHERE o.id = ?", []any{id}, func(st *sqlite3.Stmt) error {
		o = scanObject(st)
		return nil
	})
	if err != nil {
		return Object{}, err
	}
	if !found {
		return Object{}, fmt.Errorf("manifest: no object %d", id)
	}
	err = c.query("SELECT chunk, created_seq, coalesce(retired_seq, 0) FROM object_chunks WHERE object_id = ? ORDER BY chunk", []any{id},
		func(st *sqlite3.Stmt) error {
			o.Chunks = append(o.Chunks, ChunkRef{Chunk: colU32(st, 0), CreatedSeq: colU64(st, 1), RetiredSeq: colU64(st, 2)})
			return nil
		})
	return o, err
}

// ChunkState is what a checkpoint planner needs about one chunk at the
// tip: its live objects, newest layer first.
type ChunkState struct {
	Chunk      uint32
	Base       *Object  // newest live base, if any
	Deltas     []Object // live deltas newer than Base, newest first
	Shadowed   []Object // live references below Base (wasted; retire them)
	DeltaPages int      // pages of this chunk read from deltas at the tip
}

// Chunks returns the state of every chunk with a live reference at the
// tip, in chunk order.
func (c *Catalog) Chunks() ([]ChunkState, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	snap := c.snap.Load()
	var out []ChunkState
	err := c.query(`SELECT oc.chunk, `+objectCols+` FROM object_chunks oc JOIN objects o ON o.id = oc.object_id
		WHERE oc.retired_seq IS NULL ORDER BY oc.chunk, o.max_txid DESC, o.created_seq DESC, o.rec_pos DESC`, nil,
		func(st *sqlite3.Stmt) error {
			ch := colU32(st, 0)
			o := scanObjectAt(st, 1)
			if len(out) == 0 || out[len(out)-1].Chunk != ch {
				cs := ChunkState{Chunk: ch}
				if int(ch) < len(snap.chunks) && snap.chunks[ch] != nil {
					cs.DeltaPages = len(snap.chunks[ch].pages)
				}
				out = append(out, cs)
			}
			cs := &out[len(out)-1]
			switch {
			case cs.Base != nil:
				cs.Shadowed = append(cs.Shadowed, o)
			case o.Kind == ObjectBase:
				cs.Base = &o
			default:
				cs.Deltas = append(cs.Deltas, o)
			}
			return nil
		})
	return out, err
}

func scanObjectAt(st *sqlite3.Stmt, off int) Object {
	return Object{ObjectRef: ObjectRef{ID: colU64(st, off), Kind: st.ColumnText(off + 1), Key: st.ColumnText(off + 2),
		Size: st.ColumnInt64(off + 3), Hash: colU64(st, off+4), FirstPgno: colU32(st, off+5), PageCount: colU32(st, off+6),
		MaxTxid: colU64(st, off+7), CreatedSeq: colU64(st, off+8)}, MinTxid: colU64(st, off+9), RetiredSeq: colU64(st, off+10)}
}

// RetiredObjects returns objects whose every reference was retired at or
// before seq (GC candidates, subject to retention and pins).
func (c *Catalog) RetiredObjects(seq uint64) ([]Object, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	var out []Object
	err := c.query("SELECT "+objectCols+" FROM objects o WHERE o.retired_seq IS NOT NULL AND o.retired_seq <= ? ORDER BY o.id",
		[]any{seq}, func(st *sqlite3.Stmt) error { out = append(out, scanObject(st)); return nil })
	return out, err
}

// Directory returns the stored directory of a delta object.
func (c *Catalog) Directory(id uint64) (delta.Summary, error) {
	if err := c.lock(); err != nil {
		return delta.Summary{}, err
	}
	defer c.mu.Unlock()
	var blob []byte
	found, err := c.queryOne("SELECT entries FROM directories WHERE object_id = ?", []any{id}, func(st *sqlite3.Stmt) error {
		blob = st.ColumnBlob(0, nil)
		return nil
	})
	if err != nil {
		return delta.Summary{}, err
	}
	if !found {
		return delta.Summary{}, fmt.Errorf("manifest: no stored directory for object %d", id)
	}
	sum, err := delta.DecodeDirectory(blob)
	if err != nil {
		return delta.Summary{}, corruptf(c.path, "directory of object %d: %v", id, err)
	}
	return sum, nil
}

// Publish is a publishes row: one log record as applied.
type Publish struct {
	Seq        uint64
	Kind       string
	Epoch      uint64
	Writer     string
	Job        string
	Parent     Parent
	Txid       uint64
	DBPages    uint32
	Compaction bool
	CreatedMs  int64
	LogKey     string
	LogHash    uint64
	LogSize    int64
	Void       bool
}

// Publishes returns up to limit rows with seq >= from, in seq order.
func (c *Catalog) Publishes(from uint64, limit int) ([]Publish, error) {
	if err := c.lock(); err != nil {
		return nil, err
	}
	defer c.mu.Unlock()
	return c.publishesLocked(from, limit)
}

func (c *Catalog) publishesLocked(from uint64, limit int) ([]Publish, error) {
	var out []Publish
	err := c.query(`SELECT seq, kind, epoch, writer, job, parent_seq, parent_txid, txid, db_pages, compaction, created_ms,
		log_key, log_hash, log_size, void FROM publishes WHERE seq >= ? ORDER BY seq LIMIT ?`, []any{from, limit},
		func(st *sqlite3.Stmt) error {
			out = append(out, Publish{Seq: colU64(st, 0), Kind: st.ColumnText(1), Epoch: colU64(st, 2), Writer: st.ColumnText(3),
				Job: st.ColumnText(4), Parent: Parent{Seq: colU64(st, 5), Txid: colU64(st, 6)}, Txid: colU64(st, 7),
				DBPages: colU32(st, 8), Compaction: st.ColumnBool(9), CreatedMs: st.ColumnInt64(10), LogKey: st.ColumnText(11),
				LogHash: colU64(st, 12), LogSize: st.ColumnInt64(13), Void: st.ColumnBool(14)})
			return nil
		})
	return out, err
}
