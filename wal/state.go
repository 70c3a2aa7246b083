package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cespare/xxhash/v2"
)

// The state file holds what must survive the truncation of every segment
// and what must be durable independently of the segments: the confirmed
// watermark, the truncation point with the header of the last truncated
// record (its txid and WAL identity), and the header of the WAL generation
// capture last saw SQLite write.
//
// It has two 512-byte slots. An update writes the slot not holding the
// newest state and fsyncs; a reader takes the valid slot with the higher
// sequence number. A torn write therefore never loses the previous state.
const (
	stateFileName = "state"
	stateMagic    = "bopstate"
	stateVersion  = 1
	stateSlotSize = 512
	stateBodySize = 200 // bytes of a slot covered by its checksum
)

type spoolState struct {
	seq       uint64
	confirmed uint64 // records <= confirmed are durable in the spool and were durable in the WAL
	truncated uint64 // records <= truncated are gone
	// lastTruncated is the header of record `truncated` (zero if none):
	// the last spooled identity when every segment has been truncated.
	lastTruncated RecordHeader
	// walHeader is the WAL header capture last saw written (all zero if
	// none): frames of this generation were all written through capture,
	// so reconciliation may capture them even before any is spooled.
	walHeader [walHeaderSize]byte
	// walStart is one more than the spool's last txid when capture began
	// following walHeader's generation (0: unknown, a state saved before
	// bop recorded it): every record of that generation has a higher
	// txid. CheckWALGone compares published pages from there on. Never
	// above the generation's first record (pages would be missed), except
	// at an adopted image, which holds every page before it; never below
	// the spool's start (SetStart): a sparse image (a database rebuilt
	// from the store at T_seed) holds only pages written after T_seed, so
	// comparing older ones would refuse a healthy database.
	walStart uint64
	// endedHeader is the header of the last generation SQLite ended
	// (restart, truncation, deletion, rollback-journal mode): every
	// committed frame of it is spooled, so a WAL file still holding it
	// (PERSIST_WAL) yields nothing new.
	endedHeader [walHeaderSize]byte
}

func (st *spoolState) encode(b []byte) {
	clear(b[:stateSlotSize])
	le := binary.LittleEndian
	copy(b, stateMagic)
	le.PutUint32(b[8:], stateVersion)
	le.PutUint32(b[12:], stateBodySize)
	le.PutUint64(b[16:], st.seq)
	le.PutUint64(b[24:], st.confirmed)
	le.PutUint64(b[32:], st.truncated)
	if st.lastTruncated.Txid != 0 {
		st.lastTruncated.encode(b[40:104])
	}
	copy(b[104:136], st.walHeader[:])
	copy(b[136:168], st.endedHeader[:])
	le.PutUint64(b[168:], st.walStart)
	le.PutUint64(b[stateBodySize-8:], xxhash.Sum64(b[:stateBodySize-8]))
}

// decodeState parses one slot. ok is false for an empty or torn slot.
func decodeState(b []byte) (st spoolState, ok bool, err error) {
	le := binary.LittleEndian
	if string(b[:8]) != stateMagic {
		return st, false, nil
	}
	if v := le.Uint32(b[8:]); v > stateVersion {
		return st, false, fmt.Errorf("state format version %d, this bop reads up to %d: %w", v, stateVersion, ErrVersion)
	}
	if le.Uint32(b[12:]) != stateBodySize || le.Uint64(b[stateBodySize-8:]) != xxhash.Sum64(b[:stateBodySize-8]) {
		return st, false, nil
	}
	st.seq = le.Uint64(b[16:])
	st.confirmed = le.Uint64(b[24:])
	st.truncated = le.Uint64(b[32:])
	if !isZero(b[40:104]) {
		h, err := decodeRecordHeader(b[40:104])
		if err != nil {
			return st, false, fmt.Errorf("last truncated record: %v: %w", err, ErrCorrupt)
		}
		st.lastTruncated = h
	}
	copy(st.walHeader[:], b[104:136])
	copy(st.endedHeader[:], b[136:168])
	st.walStart = le.Uint64(b[168:]) // zero in states written before it existed
	return st, true, nil
}

// stateFile is the open state file.
type stateFile struct {
	fs   FS
	path string
	f    File
	cur  spoolState
	buf  [stateSlotSize]byte
	// fresh: the file was created empty by this open; its directory entry
	// is synced with the first save.
	fresh bool
}

// dirSynced records that the state file's directory was synced after the
// file was created (by the spool, for a segment's entry).
func (s *stateFile) dirSynced() { s.fresh = false }

func openState(fsys FS, path string) (*stateFile, error) {
	f, err := fsys.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	s := &stateFile{fs: fsys, path: path, f: f}
	var raw [2 * stateSlotSize]byte
	n, err := f.ReadAt(raw[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	s.fresh = n == 0
	if n > 0 {
		// What was read may be only in the page cache (a process killed
		// between a save's write and its fsync, or a failed fsync before a
		// reopen): the spool acts on it at once (segments at or below its
		// truncation point are deleted, durably), so it must be durable
		// first, its folder entry too.
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync %s: %w", path, err)
		}
		if err := fsys.SyncDir(filepath.Dir(path)); err != nil {
			f.Close()
			return nil, fmt.Errorf("sync directory of %s: %w", path, err)
		}
	}
	found := false
	for slot := 0; slot*stateSlotSize < n; slot++ {
		b := raw[slot*stateSlotSize : (slot+1)*stateSlotSize]
		st, ok, err := decodeState(b)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if ok && (!found || st.seq > s.cur.seq) {
			s.cur, found = st, true
		}
	}
	if !found && n > 0 && !isZero(raw[:n]) {
		f.Close()
		return nil, fmt.Errorf("%s: no valid state slot: %w", path, ErrCorrupt)
	}
	return s, nil
}

// save makes st durable. It writes the slot that does not hold the
// current state, so a torn write leaves the current one intact.
func (s *stateFile) save(st spoolState) error {
	if s.fresh {
		// The folder before the first content: the entries of this file
		// and of the segments a previous life created (synced only by a
		// Sync it may not have reached) are durable before a state that
		// confirms their records can be (TestSpoolFirstStateSaveSyncsFolderFirst).
		if err := s.fs.SyncDir(filepath.Dir(s.path)); err != nil {
			return fmt.Errorf("sync directory of %s: %w", s.path, err)
		}
		s.fresh = false
	}
	st.seq = s.cur.seq + 1
	st.encode(s.buf[:])
	off := int64(st.seq%2) * stateSlotSize
	if _, err := s.f.WriteAt(s.buf[:], off); err != nil {
		return fmt.Errorf("write %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", s.path, err)
	}
	s.cur = st
	return nil
}

func (s *stateFile) close() error { return s.f.Close() }
