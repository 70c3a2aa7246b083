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
// distinct pages, and only on this rare path). Limit: once published, a
// record is truncated from the spool and only its header is kept, so a
// lost WAL whose published transactions only changed pages in place,
// without growing the database, passes (the remote holds the
// pages to compare with; not done).
//
// openMain opens the main file for reading (its size too); it is called
// only when the check has to look at it, so an open whose WAL generation
// is recorded as ended, or whose spool confirmed nothing, touches nothing.
func (s *Spool) CheckWALGone(openMain func() (io.ReaderAt, int64, error), mainName, walName string) error {
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
	if c < st.FirstTxid {
		return nil // no page left to compare
	}
	set, err := s.Newest(from, c)
	if err != nil {
		return err
	}
	defer set.Close()
	page := make([]byte, set.PageSize)
	for _, pgno := range set.Pgnos() { // ascending: reads go forward through the file
		off := int64(pgno-1) * int64(set.PageSize)
		n, err := main.ReadAt(page, off)
		if n < len(page) {
			if err != nil && err != io.EOF {
				return fmt.Errorf("wal: read %s at %d: %w", mainName, off, err)
			}
			return missing(from, fmt.Sprintf("ends before page %d (txid %d wrote it)", pgno, set.locs[pgno].txid))
		}
		if xxhash.Sum64(page) != set.locs[pgno].hash {
			return missing(from, fmt.Sprintf("does not hold page %d as txid %d wrote it", pgno, set.locs[pgno].txid))
		}
	}
	return nil
}
