package wal_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/bopstore/bop/wal"
	"github.com/cespare/xxhash/v2"
)

// appendWALRec appends a WAL record of generation (salt1, 7) committed at
// frame, with the given pages (version = txid), and returns its txid.
func appendWALRec(t testing.TB, sp *wal.Spool, ps int, salt1, frame, dbPages uint32, pgnos ...uint32) uint64 {
	t.Helper()
	return appendHdr(t, sp, wal.RecordHeader{Kind: wal.KindWAL, PageSize: uint32(ps), DBPages: dbPages,
		WAL: wal.WALIdentity{Salt1: salt1, Salt2: 7, Frame: frame}}, pgnos...)
}

// mainFile builds a main database file of dbPages pages holding, for each
// page, the version (txid) given by versions (0: zeros).
func mainFile(ps int, dbPages uint32, versions map[uint32]uint64) []byte {
	b := make([]byte, int(dbPages)*ps)
	for pgno, v := range versions {
		if pgno > dbPages {
			continue
		}
		copy(b[int(pgno-1)*ps:], page(ps, pgno, v))
	}
	return b
}

func checkGone(sp *wal.Spool, main []byte) error {
	return checkGonePublished(sp, main, nil)
}

func checkGonePublished(sp *wal.Spool, main []byte, published wal.PublishedPages) error {
	return sp.CheckWALGone(func() (io.ReaderAt, int64, error) { return bytes.NewReader(main), int64(len(main)), nil }, published, "x.db", "x.db-wal")
}

// catalogOf is a PublishedPages answering from versions (page -> txid of
// its version at any boundary), as a catalog would: the pages whose version
// is newer than after. It records the ranges it was asked for.
func catalogOf(ps int, versions map[uint32]uint64, asked *[][2]uint64) wal.PublishedPages {
	return func(after, through uint64, fn func(uint32, uint64) error) error {
		*asked = append(*asked, [2]uint64{after, through})
		for pgno, v := range versions {
			if v > after && v <= through {
				if err := fn(pgno, xxhash.Sum64(page(ps, pgno, v))); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

func TestCheckWALGone(t *testing.T) {
	const ps = 512
	// Generation 1 (txid 1), then generation 2 (txids 2 and 3).
	build := func(t *testing.T) *wal.Spool {
		sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
		t.Cleanup(func() { sp.Close() })
		appendWALRec(t, sp, ps, 1, 3, 4, 1, 2, 4) // txid 1
		appendWALRec(t, sp, ps, 2, 2, 5, 1, 5)    // txid 2
		appendWALRec(t, sp, ps, 2, 4, 5, 2, 5)    // txid 3
		confirmAll(t, sp)
		return sp
	}
	full := map[uint32]uint64{1: 2, 2: 3, 4: 1, 5: 3} // every page's newest version
	lost := func(t *testing.T, err error, want string) {
		t.Helper()
		if !errors.Is(err, wal.ErrLost) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want wal.ErrLost saying %q", err, want)
		}
	}

	t.Run("main holds everything", func(t *testing.T) {
		if err := checkGone(build(t), mainFile(ps, 5, full)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an older generation is not checked", func(t *testing.T) {
		m := map[uint32]uint64{1: 2, 2: 3, 5: 3} // page 4 (txid 1, generation 1) differs
		if err := checkGone(build(t), mainFile(ps, 5, m)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("main lacks the last transaction", func(t *testing.T) {
		m := map[uint32]uint64{1: 2, 2: 1, 4: 1, 5: 2} // as of txid 2
		lost(t, checkGone(build(t), mainFile(ps, 5, m)), "does not hold page 2 as txid 3 wrote it")
	})
	t.Run("main is longer (a chunk size)", func(t *testing.T) {
		if err := checkGone(build(t), mainFile(ps, 8, full)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("main is too short", func(t *testing.T) {
		lost(t, checkGone(build(t), mainFile(ps, 4, full)), "holds 2048 bytes, fewer than the 2560 (5 pages) txid 3 left")
	})
	t.Run("generation ended", func(t *testing.T) {
		sp := build(t)
		if err := sp.RecordEnded(2, 7); err != nil {
			t.Fatal(err)
		}
		if err := checkGone(sp, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("another generation ended", func(t *testing.T) {
		sp := build(t)
		if err := sp.RecordEnded(1, 7); err != nil {
			t.Fatal(err)
		}
		lost(t, checkGone(sp, nil), "x.db-wal is gone (missing, empty or without a header), but txids 2..3")
	})
	t.Run("unconfirmed records are not checked", func(t *testing.T) {
		sp := build(t)
		appendWALRec(t, sp, ps, 2, 6, 6, 6) // txid 4, unconfirmed: no WAL holds it
		if err := checkGone(sp, mainFile(ps, 5, full)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a direct write after", func(t *testing.T) {
		sp := build(t)
		appendRec(t, sp, ps, 5, 3) // rollback-mode write: the main file changed since
		if err := checkGone(sp, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an adopted image with the generation's frames", func(t *testing.T) {
		sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
		defer sp.Close()
		img := wal.RecordHeader{Kind: wal.KindImage, PageSize: ps, DBPages: 4, WAL: wal.WALIdentity{Salt1: 2, Salt2: 7, Frame: 3}}
		appendHdr(t, sp, img, 1, 2, 3, 4)   // txid 1: the image, through frame 3
		appendWALRec(t, sp, ps, 2, 5, 4, 2) // txid 2: the same generation
		confirmAll(t, sp)
		all := map[uint32]uint64{1: 1, 2: 2, 3: 1, 4: 1}
		if err := checkGone(sp, mainFile(ps, 4, all)); err != nil {
			t.Fatal(err)
		}
		// The main file as before adoption: the image's pages from the
		// adopted WAL are not in it.
		lost(t, checkGone(sp, mainFile(ps, 4, map[uint32]uint64{1: 1, 2: 2, 4: 1})), "does not hold page 3 as txid 1 wrote it")
	})
	t.Run("an adopted image is the last confirmed", func(t *testing.T) {
		sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
		defer sp.Close()
		img := wal.RecordHeader{Kind: wal.KindImage, PageSize: ps, DBPages: 2, WAL: wal.WALIdentity{Salt1: 2, Salt2: 7, Frame: 3}}
		appendHdr(t, sp, img, 1, 2)
		confirmAll(t, sp)
		lost(t, checkGone(sp, mainFile(ps, 2, map[uint32]uint64{1: 1})), "does not hold page 2 as txid 1 wrote it")
		// An image without WAL frames: the main file was the image.
		sp2 := openSpool(t, t.TempDir(), wal.SpoolOptions{})
		defer sp2.Close()
		img.WAL = wal.WALIdentity{}
		appendHdr(t, sp2, img, 1, 2)
		confirmAll(t, sp2)
		if err := checkGone(sp2, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("nothing confirmed", func(t *testing.T) {
		sp := openSpool(t, t.TempDir(), wal.SpoolOptions{})
		defer sp.Close()
		appendWALRec(t, sp, ps, 1, 3, 4, 1)
		if err := checkGone(sp, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("published and truncated, start unknown: the size is checked", func(t *testing.T) {
		sp := build(t)
		if err := sp.Truncate(3); err != nil {
			t.Fatal(err)
		}
		lost(t, checkGone(sp, mainFile(ps, 2, full)), "holds 1024 bytes, fewer than the 2560")
		// Documented limit: the pages themselves are gone from the spool,
		// and the state does not say where the generation began (a state
		// written before bop recorded it), so there is nothing to ask the
		// catalog.
		var asked [][2]uint64
		if err := checkGonePublished(sp, mainFile(ps, 5, nil), catalogOf(ps, full, &asked)); err != nil {
			t.Fatal(err)
		}
		if len(asked) != 0 {
			t.Fatalf("asked the catalog for %v without a recorded start", asked)
		}
	})

	// The same spool, with generation 2's start recorded (after txid 1),
	// as capture records it when SQLite writes the generation's header.
	buildSeen := func(t *testing.T, truncate uint64) *wal.Spool {
		sp := build(t)
		if err := sp.RecordSeen(2, 7, 1); err != nil {
			t.Fatal(err)
		}
		if err := sp.Truncate(truncate); err != nil {
			t.Fatal(err)
		}
		return sp
	}
	t.Run("all published: pages compared with the catalog", func(t *testing.T) {
		var asked [][2]uint64
		cat := catalogOf(ps, full, &asked)
		if err := checkGonePublished(buildSeen(t, 3), mainFile(ps, 5, full), cat); err != nil {
			t.Fatal(err)
		}
		if len(asked) != 1 || asked[0] != [2]uint64{1, 3} {
			t.Fatalf("asked the catalog for %v, want after 1 through 3", asked)
		}
		// Page 2 as txid 1's generation left it: txid 3's version is lost.
		older := map[uint32]uint64{1: 2, 2: 0, 4: 1, 5: 3}
		lost(t, checkGonePublished(buildSeen(t, 3), mainFile(ps, 5, older), cat), "does not hold page 2 as published at txid 3")
		// A page of an earlier generation is not asked for.
		older = map[uint32]uint64{1: 2, 2: 3, 4: 0, 5: 3}
		if err := checkGonePublished(buildSeen(t, 3), mainFile(ps, 5, older), cat); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("partly published: the rest from the spool", func(t *testing.T) {
		// Txid 2 published (pages 1, 5), txid 3 retained (pages 2, 5):
		// page 1 is checked against the catalog, page 5 against the spool.
		var asked [][2]uint64
		published := map[uint32]uint64{1: 2, 5: 2}
		cat := catalogOf(ps, published, &asked)
		if err := checkGonePublished(buildSeen(t, 2), mainFile(ps, 5, full), cat); err != nil {
			t.Fatal(err)
		}
		if len(asked) != 1 || asked[0] != [2]uint64{1, 2} {
			t.Fatalf("asked the catalog for %v, want after 1 through 2", asked)
		}
		lost(t, checkGonePublished(buildSeen(t, 2), mainFile(ps, 5, map[uint32]uint64{1: 1, 2: 3, 4: 1, 5: 3}), cat),
			"does not hold page 1 as published at txid 2")
	})
	t.Run("the catalog's pages beyond the database are skipped", func(t *testing.T) {
		var asked [][2]uint64
		cat := catalogOf(ps, map[uint32]uint64{1: 2, 2: 3, 5: 3, 9: 3}, &asked)
		if err := checkGonePublished(buildSeen(t, 3), mainFile(ps, 5, full), cat); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("the catalog's error is returned", func(t *testing.T) {
		boom := errors.New("catalog unreadable")
		cat := func(after, through uint64, fn func(uint32, uint64) error) error { return boom }
		if err := checkGonePublished(buildSeen(t, 3), mainFile(ps, 5, full), cat); !errors.Is(err, boom) {
			t.Fatalf("got %v, want the catalog's error", err)
		}
	})
	t.Run("generation started after the published records", func(t *testing.T) {
		sp := build(t)
		if err := sp.RecordSeen(2, 7, 2); err != nil { // the start is after txid 2
			t.Fatal(err)
		}
		if err := sp.Truncate(2); err != nil {
			t.Fatal(err)
		}
		var asked [][2]uint64
		if err := checkGonePublished(sp, mainFile(ps, 5, full), catalogOf(ps, full, &asked)); err != nil {
			t.Fatal(err)
		}
		if len(asked) != 0 {
			t.Fatalf("asked the catalog for %v, want nothing (no published record of the generation)", asked)
		}
	})
}
