package wal

import (
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// CheckWALGone is called at open when the database has no WAL file (or
// one without a WAL header), before Reconcile. It proves that the main database file
// holds every confirmed transaction of the last WAL generation the spool
// recorded, unless that generation is recorded as ended.
//
// Why: confirmed records (persisted at a checkpoint's start, and by
// SyncForPublish, which the publisher calls) may still live only in the
// WAL. SQLite removes or empties the WAL only after a full checkpoint
// copied all of it into the main file, and capture then records the
// generation as ended (Deleted, Truncate); a crash between the two leaves
// it unrecorded, and the main file holds everything. But a WAL deleted by
// another program, or a folder entry a power loss dropped, takes
// transactions the spool holds (and may have published) with it: the
// database would silently continue from a state older than its own
// history, and its next transactions would fork it. That is refused here
// (ErrLost), naming the file and the transactions.
//
// The proof: the main file is at least as large as the database after
// the last confirmed transaction (a full checkpoint leaves it so), and it
// holds the newest version of every page in the generation's records the
// spool still has (by their xxhash; it reads at most the generation's
// distinct pages, and only on this rare path). Once published, a record
// is truncated from the spool and only its header is kept: the pages of
// the generation's published records are compared with the hashes the
// catalog keeps of them (published, below), from the txid at which the
// state recorded the generation's start (spoolState.walStart).
//
// openMain opens the main file for reading (its size too); it is called
// only when the check has to look at it, so an open whose WAL generation
// is recorded as ended, or whose spool confirmed nothing, touches nothing.
// published may be nil (no catalog): published records are then checked
// by the database's size alone, as they are when the generation's start
// is not recorded (a state written before bop recorded it) or an adopted
// image in the spool starts the generation.
func (s *Spool) CheckWALGone(openMain func() (io.ReaderAt, int64, error), published PublishedPages, mainName, walName string) error {
	st := s.Status()
	c := st.ConfirmedTxid
	var last RecordHeader
	switch {
	case c == 0 || c > st.LastTxid:
		return nil
	case c < st.FirstTxid:
		// Published and truncated: only its header is kept.
		s.mu.Lock()
		last = s.state.cur.lastTruncated
		s.mu.Unlock()
		if last.Txid != c {
			return nil
		}
	default:
		var err error
		if last, err = s.Header(c); err != nil {
			return err
		}
	}
	if !last.hasWAL() || (last.Kind != KindWAL && last.Kind != KindImage) {
		// A rollback-mode write, or an image without WAL frames: the main
		// file was written directly.
		return nil
	}
	// Records after C (unconfirmed: Reconcile drops them, since no WAL
	// holds their frames) must be WAL records too: a direct write after
	// them would have changed the main file since.
	for txid := c + 1; txid <= st.LastTxid; txid++ {
		h, err := s.Header(txid)
		if err != nil {
			return err
		}
		if h.Kind != KindWAL {
			return nil
		}
	}
	if _, _, ended, hasEnded := s.walHeaders(); hasEnded &&
		last.WAL.sameGeneration(binary.BigEndian.Uint32(ended[16:]), binary.BigEndian.Uint32(ended[20:])) {
		return nil // SQLite ended the generation: all of it was in the main file
	}
	missing := func(from uint64, why string) error {
		txids := fmt.Sprintf("txids %d..%d, committed in it (salts %08x/%08x, through frame %d), were", from, c, last.WAL.Salt1, last.WAL.Salt2, last.WAL.Frame)
		if from == c {
			txids = fmt.Sprintf("txid %d, committed in it (salts %08x/%08x, frame %d), was", c, last.WAL.Salt1, last.WAL.Salt2, last.WAL.Frame)
		}
		return fmt.Errorf("wal: %s is gone (missing, empty or without a header), but %s confirmed durable, and %s %s: the WAL was deleted or lost outside bop, and with it transactions the spool holds or published: %w",
			walName, txids, mainName, why, ErrLost)
	}
	// The generation's records the spool still has: from..c. An adopted
	// database's image that includes frames of this generation (its WAL
	// was adopted and kept) starts it: it holds every page before.
	from := c
	for from > st.FirstTxid && last.Kind == KindWAL {
		h, err := s.Header(from - 1)
		if err != nil {
			return err
		}
		if (h.Kind != KindWAL && h.Kind != KindImage) || !h.WAL.sameGeneration(last.WAL.Salt1, last.WAL.Salt2) {
			break
		}
		from--
		if h.Kind == KindImage {
			break
		}
	}
	main, mainSize, err := openMain()
	if err != nil {
		return err
	}
	// A full checkpoint leaves the main file as large as the database
	// after its last transaction: exactly, or rounded up to the chunk
	// size an application set (SQLITE_FCNTL_CHUNK_SIZE). Shorter, it lacks
	// pages that transaction had.
	if want := int64(last.DBPages) * int64(last.PageSize); mainSize < want {
		return missing(from, fmt.Sprintf("holds %d bytes, fewer than the %d (%d pages) txid %d left", mainSize, want, last.DBPages, c))
	}
	page := make([]byte, last.PageSize)
	// holds reports whether the main file holds page pgno with this hash.
	holds := func(pgno uint32, hash uint64, wrote string, from uint64) error {
		off := int64(pgno-1) * int64(len(page))
		n, err := main.ReadAt(page, off)
		if n < len(page) {
			if err != nil && err != io.EOF {
				return fmt.Errorf("wal: read %s at %d: %w", mainName, off, err)
			}
			return missing(from, fmt.Sprintf("ends before page %d (%s)", pgno, wrote))
		}
		if xxhash.Sum64(page) != hash {
			return missing(from, fmt.Sprintf("does not hold page %d %s", pgno, wrote))
		}
		return nil
	}
	var set *PageSet
	if c >= st.FirstTxid {
		var err error
		if set, err = s.Newest(from, c); err != nil {
			return err
		}
		defer set.Close()
		for _, pgno := range set.Pgnos() { // ascending: reads go forward through the file
			if err := holds(pgno, set.locs[pgno].hash, fmt.Sprintf("as txid %d wrote it", set.locs[pgno].txid), from); err != nil {
				return err
			}
		}
	}

	// The generation's published records, truncated from the spool: their
	// pages as the catalog knows them, except those a retained record
	// wrote again (compared above).
	s.mu.Lock()
	truncated, walStart, seen := s.state.cur.truncated, s.state.cur.walStart, s.state.cur.walHeader
	s.mu.Unlock()
	if published == nil || walStart == 0 || walStart-1 >= truncated ||
		!last.WAL.sameGeneration(binary.BigEndian.Uint32(seen[16:]), binary.BigEndian.Uint32(seen[20:])) {
		return nil
	}
	// The retained records must reach down to the truncation point in
	// this generation, and no adopted image may start it (the image holds
	// every page before it; its published form is base objects).
	fromKind := last.Kind
	if from != c {
		h, err := s.Header(from)
		if err != nil {
			return err
		}
		fromKind = h.Kind
	}
	if fromKind == KindImage || (c >= st.FirstTxid && from != st.FirstTxid) {
		return nil
	}
	pubFrom := walStart // the first txid of the generation
	return published(walStart-1, truncated, func(pgno uint32, hash uint64) error {
		if pgno == 0 || pgno > last.DBPages {
			return nil // beyond the database at txid c: freed since
		}
		if set != nil {
			if _, again := set.locs[pgno]; again {
				return nil
			}
		}
		return holds(pgno, hash, fmt.Sprintf("as published at txid %d", truncated), pubFrom)
	})
}

// PublishedPages is how CheckWALGone learns the pages of published
// transactions, which the spool no longer holds: it calls fn with every
// page whose newest version at txid through (a publish boundary) was
// published by a transaction after txid after, and that version's
// xxhash64. It may call fn for other pages too, with their version at
// through: the main file must hold that as well (the check is then only
// slower). An error from fn stops it and is returned.
type PublishedPages func(after, through uint64, fn func(pgno uint32, hash uint64) error) error
