package vfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// The seal tells bop at open whether the main database file and the WAL are
// still what bop left, so that a change made by another program is refused
// (ErrChangedOutside) instead of being captured as if bop had made it, or
// silently forking the history bop publishes.
//
// It records the identity of the main file (size, mtime, inode) whenever
// bop knows that identity is durable and final, and two flags:
//
//   - busy: bop may be changing the main file (a checkpoint copying the WAL
//     in, a rollback-mode write, the image hydrating). Set durably before
//     the first such write; cleared, with the new identity, once the file
//     is fsynced and no write is in flight. A crash while busy leaves the
//     main file's identity unknown; then the WAL reconciliation is the
//     guard (the WAL must still be the generation bop captured).
//   - open: a process had the database open and did not close it cleanly.
//     A clean close records the WAL's identity too (or its absence); a
//     crash leaves open set, and then frames SQLite appended to the WAL
//     after bop's last spooled transaction are crash recovery, captured by
//     reconciliation.
//
// Invariant: whenever busy is clear, the recorded main identity is the
// durable identity of the file (the file was fsynced, fsync persisting its
// inode, before the seal was written, and every later write by bop sets busy
// first). Whenever open is clear, the same holds for the WAL.
//
// Format (docs/FORMAT-vfs.md): two 128-byte slots; an update writes the
// slot not holding the newest state and fsyncs, so a torn write never loses
// the previous state.
const (
	sealFileName = "seal"
	sealMagic    = "bopseal\x00"
	sealVersion  = 1
	sealSlotSize = 128
	sealBodySize = 104 // bytes up to and including the checksum (the last 8)

	sealBusy = 1 << 0
	sealOpen = 1 << 1
)

// fileStat is the identity of a file as the seal records it.
type fileStat struct {
	Present bool
	Size    int64
	MtimeNs int64
	Ino     uint64
}

func (a fileStat) String() string {
	if !a.Present {
		return "absent"
	}
	return fmt.Sprintf("%d bytes, mtime %d, inode %d", a.Size, a.MtimeNs, a.Ino)
}

// statFile returns the identity of the file at path (absent if missing).
func statFile(path string) (fileStat, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return fileStat{}, nil
	}
	if err != nil {
		return fileStat{}, err
	}
	return statOf(fi), nil
}

func statOf(fi os.FileInfo) fileStat {
	return fileStat{Present: true, Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano(), Ino: fileID(fi)}
}

type sealState struct {
	seq  uint64
	busy bool
	open bool
	main fileStat
	wal  fileStat
}

func (s *sealState) encode(b []byte) {
	clear(b[:sealSlotSize])
	le := binary.LittleEndian
	copy(b, sealMagic)
	le.PutUint32(b[8:], sealVersion)
	le.PutUint32(b[12:], sealBodySize)
	le.PutUint64(b[16:], s.seq)
	var flags uint32
	if s.busy {
		flags |= sealBusy
	}
	if s.open {
		flags |= sealOpen
	}
	le.PutUint32(b[24:], flags)
	putStat(b[32:], s.main)
	putStat(b[64:], s.wal)
	le.PutUint64(b[sealBodySize-8:], xxhash.Sum64(b[:sealBodySize-8]))
}

// putStat writes a fileStat in 32 bytes: present flag, size, mtime, inode.
func putStat(b []byte, st fileStat) {
	le := binary.LittleEndian
	if st.Present {
		le.PutUint32(b[0:], 1)
	}
	le.PutUint64(b[8:], uint64(st.Size))
	le.PutUint64(b[16:], uint64(st.MtimeNs))
	le.PutUint64(b[24:], st.Ino)
}

func getStat(b []byte) (fileStat, error) {
	le := binary.LittleEndian
	var st fileStat
	switch le.Uint32(b[0:]) {
	case 0:
	case 1:
		st.Present = true
	default:
		return st, fmt.Errorf("bad presence flag %d", le.Uint32(b[0:]))
	}
	st.Size = int64(le.Uint64(b[8:]))
	st.MtimeNs = int64(le.Uint64(b[16:]))
	st.Ino = le.Uint64(b[24:])
	if st.Size < 0 || (!st.Present && (st.Size != 0 || st.MtimeNs != 0 || st.Ino != 0)) {
		return st, fmt.Errorf("bad file identity")
	}
	return st, nil
}

// decodeSeal parses one slot: ok false for an empty or torn slot; an error
// for a slot of a newer format (never guessed at).
func decodeSeal(b []byte) (s sealState, ok bool, err error) {
	if len(b) < sealSlotSize || string(b[:8]) != sealMagic {
		return s, false, nil
	}
	le := binary.LittleEndian
	if v := le.Uint32(b[8:]); v > sealVersion {
		return s, false, fmt.Errorf("seal format version %d, this bop reads up to %d", v, sealVersion)
	}
	if le.Uint32(b[12:]) != sealBodySize || le.Uint64(b[sealBodySize-8:]) != xxhash.Sum64(b[:sealBodySize-8]) {
		return s, false, nil
	}
	s.seq = le.Uint64(b[16:])
	flags := le.Uint32(b[24:])
	if flags&^(sealBusy|sealOpen) != 0 {
		return s, false, nil
	}
	s.busy = flags&sealBusy != 0
	s.open = flags&sealOpen != 0
	if s.main, err = getStat(b[32:]); err != nil {
		return s, false, nil
	}
	if s.wal, err = getStat(b[64:]); err != nil {
		return s, false, nil
	}
	return s, true, nil
}

// decodeSealFile picks the newest valid slot of a seal file's bytes.
func decodeSealFile(raw []byte) (sealState, bool, error) {
	var cur sealState
	found := false
	for slot := 0; (slot+1)*sealSlotSize <= len(raw) && slot < 2; slot++ {
		s, ok, err := decodeSeal(raw[slot*sealSlotSize : (slot+1)*sealSlotSize])
		if err != nil {
			return cur, false, err
		}
		if ok && (!found || s.seq > cur.seq) {
			cur, found = s, true
		}
	}
	return cur, found, nil
}

// sealFile is the open seal file. Its methods are safe for concurrent use.
type sealFile struct {
	path string
	mu   sync.Mutex
	f    stateFile // an *os.File (testStateFS in tests)
	cur  sealState
	buf  [sealSlotSize]byte
	// Writes bop makes to the main file: in flight now, and a counter of
	// those finished. settle clears busy only if none ran since the fsync
	// it follows started.
	inFlight int
	gen      uint64
}

// openSeal opens the seal file. With create, a missing or empty file is a
// new seal (found false); without, it is ErrBadState.
func openSeal(dir string, create bool) (_ *sealFile, found bool, err error) {
	path := filepath.Join(dir, sealFileName)
	flag := os.O_RDWR
	if create {
		flag |= os.O_CREATE
	}
	f, err := openStateFile(path, flag, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, fmt.Errorf("%w: %s is missing", ErrBadState, path)
		}
		return nil, false, fmt.Errorf("bop: open %s: %w", path, err)
	}
	var raw [2 * sealSlotSize]byte
	n, err := f.ReadAt(raw[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, false, fmt.Errorf("bop: read %s: %w", path, err)
	}
	s := &sealFile{path: path, f: f}
	cur, found, err := decodeSealFile(raw[:n])
	if err != nil {
		f.Close()
		return nil, false, fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	if !found && (n > 0 || !create) {
		f.Close()
		return nil, false, fmt.Errorf("%w: %s holds no valid seal", ErrBadState, path)
	}
	s.cur = cur
	return s, found, nil
}

// state returns the current seal.
func (s *sealFile) state() sealState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// saveLocked makes st durable (caller holds mu).
func (s *sealFile) saveLocked(st sealState) error {
	st.seq = s.cur.seq + 1
	st.encode(s.buf[:])
	off := int64(st.seq%2) * sealSlotSize
	if _, err := s.f.WriteAt(s.buf[:], off); err != nil {
		return fmt.Errorf("bop: write %s: %w", s.path, err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("bop: fsync %s: %w", s.path, err)
	}
	s.cur = st
	return nil
}

func (s *sealFile) save(st sealState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.saveLocked(st)
}

func (s *sealFile) close() error { return s.f.Close() }

// beginWrite is called before bop writes to or truncates the main file: it
// makes busy durable first (see the invariant above).
func (s *sealFile) beginWrite() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cur.busy {
		st := s.cur
		st.busy = true
		if err := s.saveLocked(st); err != nil {
			return err
		}
	}
	s.inFlight++
	return nil
}

// endWrite is called after such a write returned.
func (s *sealFile) endWrite() {
	s.mu.Lock()
	s.inFlight--
	s.gen++
	s.mu.Unlock()
}

// busyGen reports whether busy is set, and the write counter, read before
// an fsync of the main file that may allow settle.
func (s *sealFile) busyGen() (bool, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.busy, s.gen
}

// settle clears busy and records main as the main file's identity, if no
// bop write to the main file started or ended since busyGen returned gen
// (so main, taken after an fsync that began after gen was read, is the
// file's durable identity).
func (s *sealFile) settle(gen uint64, main fileStat) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.cur.busy || s.inFlight > 0 || s.gen != gen {
		return nil
	}
	st := s.cur
	st.busy, st.main = false, main
	return s.saveLocked(st)
}
