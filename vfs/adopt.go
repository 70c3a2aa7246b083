package vfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/bopstore/bop/wal"
)

// Adoption: the first open of an existing, non-empty database that has no
// bop state records the database as the spool's first transaction (an
// image record, txid 1), so that nothing of it can be lost or published as
// zeros. The image is what SQLite reads: the file with an existing WAL's
// committed frames over it (a checkpoint may have copied some of them
// into the file already, so they cannot be replayed after a file image),
// and it names the WAL's last commit frame, from which capture goes on
// (wal.AppendImage). The publisher later uploads the image as base
// objects.

// sqliteHeader is the magic string every SQLite database file starts with.
const sqliteHeader = "SQLite format 3\x00"

// journalMagic starts the header of a rollback journal that is hot (its
// transaction was never finished).
var journalMagic = []byte{0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7}

// checkAdoptable validates a file before adoption and returns its page
// size: an SQLite header, a whole number of pages, no unfinished rollback
// transaction.
func checkAdoptable(path string, size int64) (uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var hdr [100]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("%s is not an SQLite database (only %d bytes)", path, size)
		}
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	ps, err := headerPageSize(hdr[:])
	if err != nil {
		return 0, fmt.Errorf("%s: %v", path, err)
	}
	if size%int64(ps) != 0 {
		return 0, fmt.Errorf("%s is %d bytes, not a whole number of %d-byte pages: it is damaged or truncated", path, size, ps)
	}
	if size/int64(ps) > 1<<32-2 {
		return 0, fmt.Errorf("%s has more pages than SQLite allows", path)
	}
	j, err := os.Open(path + "-journal")
	if err == nil {
		var jh [8]byte
		n, _ := io.ReadFull(j, jh[:])
		j.Close()
		if n == len(jh) && bytes.Equal(jh[:], journalMagic) {
			return 0, fmt.Errorf("%s-journal holds an unfinished transaction: open the database once with sqlite3 (which rolls it back), then open it with bop", path)
		}
	}
	return ps, nil
}

// headerPageSize reads the page size from a database header.
func headerPageSize(hdr []byte) (uint32, error) {
	if len(hdr) < 100 || string(hdr[:16]) != sqliteHeader {
		return 0, errors.New("not an SQLite database (bad header)")
	}
	ps := uint32(hdr[16])<<8 | uint32(hdr[17])
	if ps == 1 {
		ps = 65536
	}
	if ps < 512 || ps > 65536 || ps&(ps-1) != 0 {
		return 0, fmt.Errorf("header says page size %d", ps)
	}
	return ps, nil
}

// recordImage appends the database at path, as SQLite reads it from the
// file and its -wal (the WAL's committed frames over the file), to the
// spool as one image record (wal.AppendImage), durable and confirmed,
// and returns its header. Neither file is modified; memory is bounded by
// one run of pages and 8 bytes per WAL frame.
func recordImage(sp *wal.Spool, path string, ps uint32) (wal.RecordHeader, error) {
	f, err := os.Open(path)
	if err != nil {
		return wal.RecordHeader{}, err
	}
	defer f.Close()
	// The file must be durable before the spool says it holds it.
	if err := f.Sync(); err != nil {
		return wal.RecordHeader{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	// So must their folder entries: stock SQLite fsyncs the folder only
	// at a WAL's first fsync (with synchronous=NORMAL, its first
	// checkpoint), and never for the main file, so a WAL it left may have
	// no durable entry. The image holds the WAL's frames and meta.json
	// then makes it the database's: a power loss must not lose the WAL
	// (the reopen would read the main file alone, the spool the image;
	// TestPowerLossAdoptWALEntry).
	if err := syncStateDir(filepath.Dir(path)); err != nil {
		return wal.RecordHeader{}, err
	}
	var wf wal.WALFile
	w, err := os.OpenFile(path+"-wal", os.O_RDWR, 0)
	switch {
	case err == nil:
		defer w.Close()
		wf = osWAL{w}
	case errors.Is(err, os.ErrNotExist):
	default:
		return wal.RecordHeader{}, fmt.Errorf("open %s-wal: %w", path, err)
	}
	h, err := wal.AppendImage(sp, osWAL{f}, ps, wf)
	if err != nil {
		return wal.RecordHeader{}, fmt.Errorf("adopt %s: %w", path, err)
	}
	return h, nil
}
