package wal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// SpoolOptions configure a Spool.
type SpoolOptions struct {
	// FS is the file system the spool writes through (default OSFS).
	FS FS
	// MaxBytes is the byte limit. When the spool holds at least this many
	// bytes, appends wait (backpressure) until Truncate frees space. A
	// record is never refused for its size: one larger than the limit is
	// written when the spool is below the limit. 0 means no limit.
	MaxBytes int64
	// AppendTimeout bounds how long an append waits for space before it
	// fails with ErrSpoolFull. 0 waits until space is freed or the spool
	// is closed.
	AppendTimeout time.Duration
	// SegmentBytes is the size at which a new segment file is started
	// (default 64 MiB, and at most an eighth of MaxBytes so that truncation
	// can free space in steps).
	SegmentBytes int64
	// BufferBytes, if > 0, lets appended records collect in memory (up to
	// this many bytes) until the spool syncs, reads, starts a new segment
	// or the buffer fills, instead of writing each record to its segment
	// file at Commit. Many small records then cost one write call, not one
	// each. A record only in the buffer is lost by a process crash as an
	// unsynced one is by a power loss (see segFile for why capture is
	// safe with it); a caller that appends records found nowhere else
	// must Sync them. 0: every record is written at its Commit.
	BufferBytes int
}

// SpoolStatus is a snapshot of the spool's state.
type SpoolStatus struct {
	Dir      string
	Bytes    int64 // bytes of segment files on disk
	MaxBytes int64
	// FirstTxid..LastTxid are the records held (FirstTxid > LastTxid when
	// none are).
	FirstTxid, LastTxid uint64
	// SyncedTxid: records up to here are fsynced in the spool.
	SyncedTxid uint64
	// ConfirmedTxid: records up to here are durable in the spool and were
	// durable in SQLite's WAL when confirmed; only these may be published.
	ConfirmedTxid uint64
	// Blocked is true while an append waits for space; Reason says why.
	Blocked      bool
	Reason       string
	BlockedSince time.Time
	Leases       []LeaseInfo
	// Err is the error that stopped the spool (a failed write or fsync):
	// every later append fails until the spool is reopened.
	Err error
}

// LeaseInfo describes a held lease.
type LeaseInfo struct {
	From, To uint64
	Holder   string
}

// segment is one segment file. Records in it have consecutive txids from
// first; offs[i] is where record first+i starts.
type segment struct {
	name  string
	first uint64
	f     File
	size  int64 // end of the last complete record (the append position)
	offs  []int64
}

func (g *segment) last() uint64 { return g.first + uint64(len(g.offs)) - 1 }

// Spool is the local, durable queue of captured transactions: segment
// files of records in txid order, appended by capture, read by the
// checkpointer, truncated after publishing.
//
// Invariants:
//   - Txids are consecutive: the records held are truncated+1 .. last.
//   - Records <= synced are fsynced (segment data and directory entry).
//   - Records <= confirmed (persisted in the state file) are <= synced and
//     were durable in SQLite's WAL when confirmed: reconciliation trusts
//     them without looking at the WAL, and they are never dropped.
//   - Records above confirmed may be ahead of what SQLite still has after a
//     power loss; reconciliation verifies them against the WAL.
//   - Only confirmed records can be truncated; a leased range cannot.
type Spool struct {
	dir  string
	fs   FS
	opts SpoolOptions

	appendMu sync.Mutex // one appender at a time; held from begin to commit/abort
	syncMu   sync.Mutex // one Sync at a time

	mu        sync.Mutex
	cond      *sync.Cond // broadcast when bytes shrink, on close and on failure
	segs      []*segment
	state     *stateFile
	last      uint64       // last record txid (== state.truncated when none)
	lastHdr   RecordHeader // header of record last (zero if none ever)
	synced    uint64
	bytes     int64
	dirDirty  bool // a segment was created or removed since the last directory sync
	leases    map[uint64]LeaseInfo
	leaseSeq  uint64
	waiting   int
	reason    string
	blockedAt time.Time
	closed    bool
	err       error // sticky: a write or fsync failed

	app  Appender // capture's appender (begin), reused
	dbuf []byte   // appender directory buffer, reused

	// Lock-free mirrors for WaitForSpace's fast path (every WAL write
	// calls it): bytes, and whether the spool stopped (closed or failed).
	abytes  atomic.Int64
	stopped atomic.Bool
}

func (s *Spool) addBytesLocked(d int64) {
	s.bytes += d
	s.abytes.Store(s.bytes)
}

const (
	defaultSegmentBytes = 64 << 20
	// appendBufferSize is the segment write buffer of an unbuffered spool
	// (BufferBytes 0): it makes each record one write call.
	appendBufferSize = 256 << 10
)

// wrapSegment puts a segment file behind its write buffer (segFile).
func (s *Spool) wrapSegment(f File) File {
	n := s.opts.BufferBytes
	if n <= 0 {
		n = appendBufferSize
	}
	return newSegFile(f, n, min(preallocBytes, s.opts.SegmentBytes))
}

// OpenSpool opens (creating if needed) the spool in dir. It verifies every
// segment: a record that fails its checksum at or below the confirmed
// watermark is corruption (ErrCorrupt, naming the file and txid); a
// damaged record above it is a torn tail from a crash mid-append and is cut
// off, with everything after it. Pages of records above the watermark are
// verified in full, since a power loss can leave holes anywhere in them.
func OpenSpool(dir string, opts SpoolOptions) (*Spool, error) {
	if opts.FS == nil {
		opts.FS = OSFS{}
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
		if opts.MaxBytes > 0 && opts.MaxBytes/8 < opts.SegmentBytes {
			opts.SegmentBytes = max(opts.MaxBytes/8, 64<<10)
		}
	}
	s := &Spool{dir: dir, fs: opts.FS, opts: opts, leases: map[uint64]LeaseInfo{}}
	s.cond = sync.NewCond(&s.mu)
	if err := s.fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("wal: create spool directory: %w", err)
	}
	st, err := openState(s.fs, filepath.Join(dir, stateFileName))
	if err != nil {
		return nil, fmt.Errorf("wal: open spool state: %w", err)
	}
	s.state = st
	if err := s.load(); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

// load scans the segments (see OpenSpool).
func (s *Spool) load() error {
	st := s.state.cur
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("wal: list spool %s: %w", s.dir, err)
	}
	var segNames []string
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			segNames = append(segNames, n)
		}
	}
	sort.Strings(segNames)

	s.last = st.truncated
	s.lastHdr = st.lastTruncated
	expect := uint64(0) // txid the next record must have (0: not known yet)
	torn := false       // the tail was cut: remove every later segment
	for i, name := range segNames {
		path := filepath.Join(s.dir, name)
		first, _ := parseSegmentName(name)
		if torn {
			if err := s.removeFile(path); err != nil {
				return err
			}
			continue
		}
		f, err := s.fs.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("wal: open %s: %w", path, err)
		}
		g := &segment{name: name, first: first, f: s.wrapSegment(f)}
		isLast := i == len(segNames)-1
		// A segment wholly at or below the truncation point is left over
		// from a Truncate that crashed after saving the state (its
		// deletions are not fsynced); one this check cannot tell is
		// dropped after its scan, below.
		if i+1 < len(segNames) {
			if next, _ := parseSegmentName(segNames[i+1]); next <= st.truncated+1 {
				f.Close()
				if err := s.removeFile(path); err != nil {
					return err
				}
				continue
			}
		}
		// The first txid this segment must hold: the one after the
		// previous segment's, or for the first kept one, the one after
		// the truncation point.
		want := expect
		if want == 0 {
			want = st.truncated + 1
		}
		if first > want && want > st.confirmed {
			// Records want..first-1 are missing but unconfirmed: a
			// rotation's folder entry a power loss took while a later
			// one's survived (entries become durable in any order before
			// the folder's fsync). A torn tail, like a torn record:
			// this segment and every later one go.
			f.Close()
			if err := s.removeFile(path); err != nil {
				return err
			}
			torn = true
			continue
		}
		if expect != 0 && first != expect {
			f.Close()
			return fmt.Errorf("wal: spool segment %s starts at txid %d, expected %d: %w", path, first, expect, ErrCorrupt)
		}
		cut, err := s.scanSegment(g, path, st.confirmed)
		if err != nil {
			f.Close()
			return err
		}
		if cut {
			torn = true
		}
		if len(g.offs) == 0 {
			// Empty: created by a rotation that crashed before its first
			// record landed, or cut to nothing above. Its first txid must
			// still be unconfirmed; drop the file.
			f.Close()
			if first <= st.confirmed && first > st.truncated {
				return fmt.Errorf("wal: spool segment %s holds no record but txid %d is confirmed: %w", path, first, ErrCorrupt)
			}
			if err := s.removeFile(path); err != nil {
				return err
			}
			if !isLast {
				torn = true
			}
			continue
		}
		if g.last() <= st.truncated {
			// Wholly at or below the truncation point, and not caught by
			// the check above (the last segment, or the next one starts
			// past the point): left over from a Truncate whose deletions
			// a power loss undid (they are not fsynced), possibly without
			// the newer segments it deleted too. Kept, it could take
			// appends at positions that imply other txids: dropped.
			f.Close()
			if err := s.removeFile(path); err != nil {
				return err
			}
			continue
		}
		s.segs = append(s.segs, g)
		s.addBytesLocked(g.size)
		expect = g.last() + 1
		if g.last() > st.truncated {
			s.last = g.last()
			h, err := s.readHeader(g, g.last())
			if err != nil {
				return err
			}
			s.lastHdr = h
		}
	}
	if len(s.segs) > 0 && s.segs[0].first > st.truncated+1 {
		return fmt.Errorf("wal: spool %s: records %d..%d are missing: %w", s.dir, st.truncated+1, s.segs[0].first-1, ErrCorrupt)
	}
	if st.confirmed > s.last {
		return fmt.Errorf("wal: spool %s: txid %d was confirmed durable but the spool ends at %d: %w", s.dir, st.confirmed, s.last, ErrCorrupt)
	}
	// What was read may still be only in the page cache (a process killed
	// before it fsynced, the machine still up): fsync it now, so that
	// "synced" means durable before anything is confirmed on top of it.
	// The folder entries of segments a rotation made since the last
	// confirmation (synced only by the next Sync, which a close or a kill
	// may never reach) were made durable by openState, whose fsync of
	// the folder, or the state's first save's, comes before any record
	// can be confirmed (TestSpoolReopenSyncsNewSegmentEntries).
	for _, g := range s.segs {
		if err := g.f.Sync(); err != nil {
			return fmt.Errorf("wal: fsync spool segment %s: %w", filepath.Join(s.dir, g.name), err)
		}
	}
	s.synced = s.last
	if s.dirDirty {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return fmt.Errorf("wal: sync spool directory %s: %w", s.dir, err)
		}
		s.dirDirty = false
		s.state.dirSynced()
	}
	return nil
}

// removeFile removes a spool file; the next directory sync makes that
// durable.
func (s *Spool) removeFile(path string) error {
	if err := s.removeUnsynced(path); err != nil {
		return err
	}
	s.dirDirty = true
	return nil
}

// removeUnsynced removes a spool file whose return after a power loss is
// harmless (Truncate's segments), leaving the directory unmarked.
func (s *Spool) removeUnsynced(path string) error {
	if err := s.fs.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wal: remove %s: %w", path, err)
	}
	return nil
}

// scanSegment reads a segment's header and records, filling g.offs and
// g.size. A damaged record above confirmed cuts the file there (cut=true);
// at or below it is ErrCorrupt.
func (s *Spool) scanSegment(g *segment, path string, confirmed uint64) (cut bool, err error) {
	size, err := g.f.Size()
	if err != nil {
		return false, fmt.Errorf("wal: stat %s: %w", path, err)
	}
	var hb [segHeaderSize]byte
	if _, err := g.f.ReadAt(hb[:], 0); err != nil && !(errors.Is(err, io.EOF) && size < segHeaderSize) {
		return false, fmt.Errorf("wal: read %s: %w", path, err)
	}
	first, herr := decodeSegmentHeader(hb[:])
	if herr == nil && first != g.first {
		herr = fmt.Errorf("segment header says txid %d: %w", first, ErrCorrupt)
	}
	if herr != nil {
		if errors.Is(herr, ErrVersion) || g.first <= confirmed {
			return false, fmt.Errorf("wal: spool segment %s: %w", path, herr)
		}
		// Torn creation of an unconfirmed segment.
		return true, nil
	}
	off := int64(segHeaderSize)
	v := newRecordVerifier()
	for off < size {
		txid := g.first + uint64(len(g.offs))
		h, end, rerr := v.verify(g.f, off, size, txid, txid > confirmed)
		if rerr != nil {
			if txid <= confirmed {
				return false, fmt.Errorf("wal: spool segment %s, txid %d at offset %d: %v: %w", path, txid, off, rerr, ErrCorrupt)
			}
			if err := g.f.Truncate(off); err != nil {
				return false, fmt.Errorf("wal: cut torn tail of %s at %d: %w", path, off, err)
			}
			if err := g.f.Sync(); err != nil {
				return false, fmt.Errorf("wal: sync %s: %w", path, err)
			}
			cut = true
			break
		}
		_ = h
		g.offs = append(g.offs, off)
		off = end
	}
	g.size = off
	return cut, nil
}

// Close closes the spool. Appends waiting for space fail with ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.stopped.Store(true)
	s.cond.Broadcast()
	s.mu.Unlock()
	// Wait for an append in progress to finish before closing its file.
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.trimLocked()
	if cerr := s.closeFiles(); err == nil {
		err = cerr
	}
	return err
}

// trimLocked frees the space reserved past the active segment's last
// record (segFile), at Close.
func (s *Spool) trimLocked() error {
	if n := len(s.segs); n > 0 && s.err == nil {
		g := s.segs[n-1]
		if err := g.f.Truncate(g.size); err != nil {
			return fmt.Errorf("wal: trim spool segment %s: %w", filepath.Join(s.dir, g.name), err)
		}
	}
	return nil
}

func (s *Spool) closeFiles() error {
	var first error
	for _, g := range s.segs {
		if err := g.f.Close(); err != nil && first == nil {
			first = err
		}
	}
	s.segs = nil
	if s.state != nil {
		if err := s.state.close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// SetStart makes a spool that has never held a record continue its txids
// after txid: the next record appended gets txid+1. A database taken over
// from the remote at boundary T_seed uses it so that its local txids
// continue from the remote's (DESIGN section 6). txid counts as both
// truncated and confirmed: there is nothing below it to publish.
func (s *Spool) SetStart(txid uint64) error {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	st := s.state.cur
	if s.last != 0 || st.truncated != 0 || st.lastTruncated.Txid != 0 || len(s.segs) != 0 {
		return fmt.Errorf("wal: spool %s: SetStart(%d) on a spool that already holds txids up to %d", s.dir, txid, s.last)
	}
	if txid == 0 {
		return nil
	}
	st.truncated, st.confirmed = txid, txid
	if err := s.state.save(st); err != nil {
		return s.failLocked(fmt.Errorf("wal: %w", err))
	}
	s.last, s.synced, s.lastHdr = txid, txid, RecordHeader{}
	return nil
}

// lastTxid is the txid of the last record.
func (s *Spool) lastTxid() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// hasUnsynced reports whether records were appended since the last Sync
// (Conn.Sync's fsync beside the WAL's is for records; a directory entry
// left to sync, dirDirty, is synced by the Sync after the WAL's).
func (s *Spool) hasUnsynced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last > s.synced
}

// Dir returns the spool's directory.
func (s *Spool) Dir() string { return s.dir }

// Status returns a snapshot of the spool's state.
func (s *Spool) Status() SpoolStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SpoolStatus{
		Dir: s.dir, Bytes: s.bytes, MaxBytes: s.opts.MaxBytes,
		FirstTxid: s.state.cur.truncated + 1, LastTxid: s.last,
		SyncedTxid: s.synced, ConfirmedTxid: s.state.cur.confirmed,
		Blocked: s.waiting > 0, Err: s.err,
	}
	if st.Blocked {
		st.Reason, st.BlockedSince = s.reason, s.blockedAt
	}
	for _, l := range s.leases {
		st.Leases = append(st.Leases, l)
	}
	sort.Slice(st.Leases, func(i, j int) bool { return st.Leases[i].From < st.Leases[j].From })
	return st
}

// LastHeader returns the header of the last record ever appended (from the
// state file if every record has been truncated), and false if there was
// none.
func (s *Spool) LastHeader() (RecordHeader, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastHdr, s.lastHdr.Txid != 0
}

// failLocked records a sticky failure.
func (s *Spool) failLocked(err error) error {
	if s.err == nil {
		s.err = err
		s.stopped.Store(true)
		s.cond.Broadcast()
	}
	return err
}

func (s *Spool) usableLocked() error {
	if s.closed {
		return ErrClosed
	}
	if s.err != nil {
		return fmt.Errorf("wal: spool %s stopped after an earlier failure: %w", s.dir, s.err)
	}
	return nil
}

// overLimitLocked: appends must wait.
func (s *Spool) overLimitLocked() bool {
	return s.opts.MaxBytes > 0 && s.bytes >= s.opts.MaxBytes && s.last > s.state.cur.truncated
}

// hasSpace is WaitForSpace's lock-free fast path: an append would not
// wait. Capture asks it first, so that the writer's context (a call into
// the VFS) is looked up only when a wait may follow.
func (s *Spool) hasSpace() bool {
	return !s.stopped.Load() && (s.opts.MaxBytes <= 0 || s.abytes.Load() < s.opts.MaxBytes)
}

// WaitForSpace blocks while the spool is at or over its byte limit, up to
// AppendTimeout (ErrSpoolFull), until Close (ErrClosed) or until ctx ends
// (ErrSpoolFull wrapping ctx's error: the writer gave up). Capture calls
// it at the start of each write, without holding its own lock, so that
// backpressure slows SQLite's commits while the publisher (which needs
// capture's lock for SyncForPublish) can still drain the spool.
func (s *Spool) WaitForSpace(ctx context.Context) error {
	if s.hasSpace() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if !s.overLimitLocked() {
		return nil
	}
	start := time.Now()
	var timer *time.Timer
	timedOut := false
	if s.opts.AppendTimeout > 0 {
		timer = time.AfterFunc(s.opts.AppendTimeout, func() {
			s.mu.Lock()
			timedOut = true
			s.cond.Broadcast()
			s.mu.Unlock()
		})
		defer timer.Stop()
	}
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.waiting++
	if s.waiting == 1 {
		s.blockedAt = start
	}
	defer func() { s.waiting-- }()
	for s.overLimitLocked() {
		s.reason = fmt.Sprintf("spool %s holds %d bytes, limit %d: commits wait until the checkpointer publishes and truncates (oldest txid %d)",
			s.dir, s.bytes, s.opts.MaxBytes, s.state.cur.truncated+1)
		if err := s.usableLocked(); err != nil {
			return err
		}
		if timedOut {
			return fmt.Errorf("wal: waited %v: %s: %w", time.Since(start).Round(time.Millisecond), s.reason, ErrSpoolFull)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("wal: waited %v, then the writer gave up (%w): %s: %w", time.Since(start).Round(time.Millisecond), err, s.reason, ErrSpoolFull)
		}
		s.cond.Wait()
	}
	return s.usableLocked()
}

// Sync fsyncs the records appended so far (and the spool directory if a
// segment was created or removed).
func (s *Spool) Sync() error {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	s.mu.Lock()
	if err := s.usableLocked(); err != nil {
		s.mu.Unlock()
		return err
	}
	target := s.last
	if target <= s.synced && !s.dirDirty {
		s.mu.Unlock()
		return nil
	}
	var g *segment
	if n := len(s.segs); n > 0 {
		g = s.segs[n-1]
	}
	dirDirty := s.dirDirty
	s.dirDirty = false
	s.mu.Unlock()

	// Older segments were fsynced when the active one was started, so the
	// active segment holds every unsynced record.
	var err error
	if g != nil {
		if err = g.f.Sync(); err != nil {
			err = fmt.Errorf("wal: fsync spool segment %s: %w", filepath.Join(s.dir, g.name), err)
		}
	}
	if err == nil && dirDirty {
		if err = s.fs.SyncDir(s.dir); err != nil {
			err = fmt.Errorf("wal: fsync spool directory %s: %w", s.dir, err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		// After a failed fsync the kernel may have dropped the dirty
		// pages: nothing written since the last good fsync can be trusted.
		return s.failLocked(err)
	}
	s.synced = max(s.synced, target)
	if dirDirty {
		// The state file was created when the spool was opened, before
		// this sync of its directory: its entry is durable now, and its
		// first save need not sync the directory again.
		s.state.dirSynced()
	}
	return nil
}

// Confirmed returns the persisted confirmed watermark.
func (s *Spool) Confirmed() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.cur.confirmed
}

// SetConfirmed raises the persisted confirmed watermark to txid (which
// must already be synced). Capture calls it once the WAL frames of every
// record up to txid are known durable.
func (s *Spool) SetConfirmed(txid uint64) error {
	return s.saveState(func(st *spoolState) error {
		return s.confirmLocked(st, txid)
	})
}

func (s *Spool) confirmLocked(st *spoolState, txid uint64) error {
	if txid <= st.confirmed {
		return errNoChange
	}
	if txid > s.synced {
		return fmt.Errorf("wal: confirm txid %d: spool synced only to %d", txid, s.synced)
	}
	st.confirmed = txid
	return nil
}

// unknownStart is persist's seenAfter when the txid at which a generation's
// records begin is not known.
const unknownStart = ^uint64(0)

// walHeaders returns the WAL headers the state records: the generation
// capture follows and the last one SQLite ended (ok false when zero).
func (s *Spool) walHeaders() (seen [walHeaderSize]byte, hasSeen bool, ended [walHeaderSize]byte, hasEnded bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &s.state.cur
	return st.walHeader, !isZero(st.walHeader[:]), st.endedHeader, !isZero(st.endedHeader[:])
}

// persist fsyncs the spool and saves, in one state write, the confirmed
// watermark (raised to confirm if higher), the generation SQLite ended
// (ended, if not nil) and the generation capture now follows (seen, if not
// nil). A generation both ended and seen is not ended. seenAfter is the
// txid after which seen's records begin, if a new seen (unknownStart: not
// known; see spoolState.walStart).
func (s *Spool) persist(confirm uint64, ended, seen *[walHeaderSize]byte, seenAfter uint64) error {
	if err := s.Sync(); err != nil {
		return err
	}
	return s.saveState(func(st *spoolState) error {
		changed := false
		if err := s.confirmLocked(st, confirm); err == nil {
			changed = true
		} else if err != errNoChange {
			return err
		}
		if ended != nil && st.endedHeader != *ended {
			st.endedHeader, changed = *ended, true
		}
		if seen != nil && st.walHeader != *seen {
			st.walHeader, changed = *seen, true
			st.walStart = 0
			if seenAfter != unknownStart {
				st.walStart = seenAfter + 1
			}
		}
		if seen != nil && st.endedHeader == *seen {
			st.endedHeader, changed = [walHeaderSize]byte{}, true
		}
		if !changed {
			return errNoChange
		}
		return nil
	})
}

// lastWALHeader returns the header of the last record that names a WAL
// commit frame (a WAL record, or an adopted image that includes WAL
// frames), walking back over the others (rare: rollback-journal mode,
// adoption without a WAL), down to the truncation point.
func (s *Spool) lastWALHeader() (RecordHeader, bool, error) {
	h, ok := s.LastHeader()
	for steps := 0; ok && !h.hasWAL() && steps < 4096; steps++ {
		s.mu.Lock()
		first := s.state.cur.truncated + 1
		lt := s.state.cur.lastTruncated
		s.mu.Unlock()
		if h.Txid <= first {
			if h.Txid == first && lt.hasWAL() {
				return lt, true, nil
			}
			return RecordHeader{}, false, nil
		}
		var err error
		if h, err = s.Header(h.Txid - 1); err != nil {
			return RecordHeader{}, false, err
		}
	}
	return h, ok && h.hasWAL(), nil
}

var errNoChange = errors.New("no change")

// saveState applies change to a copy of the state and saves it, under mu
// so that the state file's writers are serialised.
func (s *Spool) saveState(change func(*spoolState) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	st := s.state.cur
	if err := change(&st); err != nil {
		if err == errNoChange {
			return nil
		}
		return err
	}
	if err := s.state.save(st); err != nil {
		return s.failLocked(fmt.Errorf("wal: %w", err))
	}
	return nil
}

// segmentFor returns the segment holding txid (caller holds mu).
func (s *Spool) segmentForLocked(txid uint64) (*segment, int64, error) {
	i := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].first > txid }) - 1
	if i < 0 || txid > s.segs[i].last() {
		return nil, 0, fmt.Errorf("wal: txid %d not in spool %s: %w", txid, s.dir, ErrRange)
	}
	g := s.segs[i]
	return g, g.offs[txid-g.first], nil
}

// readHeader reads and checks the header of record txid in g. Callers
// holding s.mu use it directly; g.offs grows under s.mu while Appender.Commit
// runs, so callers without the lock take off from segmentForLocked and use
// readHeaderAt.
func (s *Spool) readHeader(g *segment, txid uint64) (RecordHeader, error) {
	return s.readHeaderAt(g, g.offs[txid-g.first], txid)
}

// readHeaderAt reads and checks the header of record txid at offset off of g.
// It does not touch g.offs, so it is safe without s.mu.
func (s *Spool) readHeaderAt(g *segment, off int64, txid uint64) (RecordHeader, error) {
	var b [recHeaderSize]byte
	if _, err := g.f.ReadAt(b[:], off); err != nil {
		return RecordHeader{}, fmt.Errorf("wal: read %s at %d: %w", filepath.Join(s.dir, g.name), off, err)
	}
	h, err := decodeRecordHeader(b[:])
	if err == nil && h.Txid != txid {
		err = fmt.Errorf("record at offset %d has txid %d", off, h.Txid)
	}
	if err != nil {
		return h, fmt.Errorf("wal: spool segment %s, txid %d: %v: %w", filepath.Join(s.dir, g.name), txid, err, ErrCorrupt)
	}
	return h, nil
}

// Header returns the header of record txid.
func (s *Spool) Header(txid uint64) (RecordHeader, error) {
	s.mu.Lock()
	if txid <= s.state.cur.truncated || txid > s.last {
		s.mu.Unlock()
		return RecordHeader{}, fmt.Errorf("wal: txid %d not in spool %s (holds %d..%d): %w", txid, s.dir, s.state.cur.truncated+1, s.last, ErrRange)
	}
	g, off, err := s.segmentForLocked(txid)
	s.mu.Unlock()
	if err != nil {
		return RecordHeader{}, err
	}
	return s.readHeaderAt(g, off, txid)
}

// dropAfter removes every record above txid: reconciliation found that
// SQLite's WAL no longer holds them. Records at or below the confirmed
// watermark are never dropped.
func (s *Spool) dropAfter(txid uint64) error {
	s.appendMu.Lock()
	defer s.appendMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.usableLocked(); err != nil {
		return err
	}
	if txid >= s.last {
		return nil
	}
	if txid < s.state.cur.confirmed || txid < s.state.cur.truncated {
		return fmt.Errorf("wal: refusing to drop confirmed records above txid %d (confirmed %d)", txid, s.state.cur.confirmed)
	}
	for len(s.segs) > 0 {
		g := s.segs[len(s.segs)-1]
		if g.first > txid {
			s.addBytesLocked(-(g.size))
			g.f.Close()
			s.segs = s.segs[:len(s.segs)-1]
			if err := s.removeFile(filepath.Join(s.dir, g.name)); err != nil {
				return s.failLocked(err)
			}
			continue
		}
		keep := int(txid - g.first + 1)
		end := g.offs[keep-1]
		h, err := s.readHeader(g, txid)
		if err != nil {
			return err
		}
		end += h.size()
		if err := g.f.Truncate(end); err != nil {
			return s.failLocked(fmt.Errorf("wal: truncate %s: %w", g.name, err))
		}
		if err := g.f.Sync(); err != nil {
			return s.failLocked(fmt.Errorf("wal: fsync %s: %w", g.name, err))
		}
		s.addBytesLocked(-(g.size - end))
		g.size = end
		g.offs = g.offs[:keep]
		s.lastHdr = h
		break
	}
	if len(s.segs) == 0 || s.segs[len(s.segs)-1].last() < txid {
		s.lastHdr = s.state.cur.lastTruncated
	}
	s.last = txid
	s.synced = min(s.synced, txid)
	if s.dirDirty {
		if err := s.fs.SyncDir(s.dir); err != nil {
			return s.failLocked(fmt.Errorf("wal: fsync spool directory: %w", err))
		}
		s.dirDirty = false
	}
	s.cond.Broadcast()
	return nil
}
