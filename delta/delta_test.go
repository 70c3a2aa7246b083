package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/internal/testutil"
)

var pageSizes = []uint32{512, 1024, 2048, 4096, 8192, 16384, 32768, 65536}

// checkObject opens data and checks every page, the directory, the
// directory copy and Verify against what was encoded.
func checkObject(t *testing.T, data []byte, sum Summary, pages map[uint32][]byte) {
	t.Helper()
	h := sum.Header
	if int64(len(data)) != sum.Size || sum.Size != ObjectSize(h.PageSize, h.PageCount) {
		t.Fatalf("size: wrote %d, summary %d, ObjectSize %d", len(data), sum.Size, ObjectSize(h.PageSize, h.PageCount))
	}
	// The content hash is computed independently here, not taken from
	// the encoder.
	if want := xxhash.Sum64(data[:len(data)-TrailerSize]); sum.Hash != want {
		t.Fatalf("summary hash %016x, bytes before trailer hash to %016x", sum.Hash, want)
	}
	if want := xxhash.Sum64(data); sum.FileHash != want {
		t.Fatalf("summary file hash %016x, the object's bytes hash to %016x", sum.FileHash, want)
	}
	o, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if o.Header() != h {
		t.Fatalf("header: got %+v, want %+v", o.Header(), h)
	}
	if o.Hash() != sum.Hash || o.Size() != sum.Size {
		t.Fatalf("object hash/size %016x/%d, summary %016x/%d", o.Hash(), o.Size(), sum.Hash, sum.Size)
	}
	if !slices.Equal(o.Directory(), sum.Entries) {
		t.Fatalf("directory differs from the encoder's")
	}
	if len(o.Directory()) != len(pages) {
		t.Fatalf("directory has %d entries, encoded %d pages", len(o.Directory()), len(pages))
	}
	dst := make([]byte, 0, h.PageSize)
	for i, e := range o.Directory() {
		want := pages[e.Pgno]
		if want == nil {
			t.Fatalf("directory lists page %d that was never added", e.Pgno)
		}
		if e.Index != uint32(i) || e.Offset != FrameOffset(h.PageSize, uint32(i)) || e.Hash != xxhash.Sum64(want) {
			t.Fatalf("entry %d: %+v", i, e)
		}
		got, err := o.ReadPage(e.Pgno, dst)
		if err != nil {
			t.Fatalf("ReadPage(%d): %v", e.Pgno, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("ReadPage(%d): wrong bytes", e.Pgno)
		}
		if &got[0] != &dst[:1][0] {
			t.Fatalf("ReadPage(%d) did not use dst", e.Pgno)
		}
		// The frame at the arithmetic location verifies on its own.
		off := FrameOffset(h.PageSize, uint32(i))
		page, hash, err := DecodeFrame(data[off:off+FrameSize(h.PageSize)], e.Pgno, h.PageSize)
		if err != nil || !bytes.Equal(page, want) || hash != e.Hash {
			t.Fatalf("DecodeFrame(frame %d): %v", i, err)
		}
		if p := FramePgno(data[off : off+FrameSize(h.PageSize)]); p != e.Pgno {
			t.Fatalf("FramePgno(frame %d) = %d, want %d", i, p, e.Pgno)
		}
	}
	if p := FramePgno(make([]byte, FrameHeaderSize-1)); p != 0 {
		t.Fatalf("FramePgno of a short frame = %d", p)
	}
	if err := Verify(bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// The directory copy is the object minus its frames, byte for byte.
	cp, err := EncodeDirectory(o.Summary())
	if err != nil {
		t.Fatalf("EncodeDirectory: %v", err)
	}
	dirOff := DirOffset(h.PageSize, h.PageCount)
	if want := append(slices.Clone(data[:HeaderSize]), data[dirOff:]...); !bytes.Equal(cp, want) {
		t.Fatalf("directory copy is not header+directory+trailer of the object")
	}
	back, err := DecodeDirectory(cp)
	if err != nil {
		t.Fatalf("DecodeDirectory: %v", err)
	}
	if back.Header != h || back.Hash != sum.Hash || back.Size != sum.Size || back.PageCount != h.PageCount ||
		!slices.Equal(back.Entries, sum.Entries) {
		t.Fatalf("DecodeDirectory: got %+v", back)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, ps := range pageSizes {
		// Sizes on both sides of Open's one-read threshold.
		for _, n := range []int{1, 3, 40} {
			t.Run(fmt.Sprintf("base/%d/%d", ps, n), func(t *testing.T) {
				h := Header{Kind: KindBase, PageSize: ps, ObjectID: uint64(ps)<<8 | uint64(n), MinTxid: 7, MaxTxid: 9}
				data, sum, pages := encodeObject(t, h, seq(1+2*16384, n))
				checkObject(t, data, sum, pages)
			})
			t.Run(fmt.Sprintf("delta/%d/%d", ps, n), func(t *testing.T) {
				h := Header{Kind: KindDelta, PageSize: ps, ObjectID: uint64(ps)<<9 | uint64(n), MinTxid: 10, MaxTxid: 10}
				pgnos := make([]uint32, n)
				p := uint32(3)
				for i := range pgnos {
					pgnos[i] = p
					p += 2 + uint32(i*i*977) // gaps, spanning chunks
				}
				data, sum, pages := encodeObject(t, h, pgnos)
				checkObject(t, data, sum, pages)
				o, _ := Open(bytes.NewReader(data), int64(len(data)))
				for _, missing := range []uint32{0, 1, 2, 4, pgnos[n-1] + 1, math.MaxUint32} {
					if _, ok := o.Lookup(missing); ok {
						t.Fatalf("Lookup(%d) found a page never added", missing)
					}
					if _, err := o.ReadPage(missing, nil); !errors.Is(err, ErrPageNotFound) {
						t.Fatalf("ReadPage(%d): %v, want ErrPageNotFound", missing, err)
					}
				}
			})
		}
	}
}

// Chunk k of a base starts at 1 + k*chunkPages: a reader that computed
// offsets from the absolute pgno (the seed's bug) reads the wrong frame or
// past the end. Every page must resolve at frame pgno - FirstPgno.
func TestBaseOfLaterChunk(t *testing.T) {
	const ps, chunkPages = 1024, 16
	for _, first := range []uint32{1, 1 + 1*chunkPages, 1 + 5*chunkPages, math.MaxUint32 - chunkPages + 1} {
		t.Run(fmt.Sprint(first), func(t *testing.T) {
			h := Header{Kind: KindBase, PageSize: ps, ObjectID: uint64(first), MinTxid: 1, MaxTxid: 5}
			data, sum, pages := encodeObject(t, h, seq(first, chunkPages))
			checkObject(t, data, sum, pages)
			o, err := Open(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			for i := uint32(0); i < chunkPages; i++ {
				p := first + i
				e, ok := o.Lookup(p)
				if !ok || e.Index != i || e.Offset != FrameOffset(ps, i) {
					t.Fatalf("Lookup(%d) = %+v, %v; want frame %d", p, e, ok, i)
				}
				got, err := o.ReadPage(p, nil)
				if err != nil || binary.LittleEndian.Uint32(got) != p || !bytes.Equal(got, pages[p]) {
					t.Fatalf("ReadPage(%d): %v", p, err)
				}
				// The absolute-pgno offset must not verify as page p.
				if first > 1 {
					abs := FrameOffset(ps, p)
					if abs+FrameSize(ps) <= int64(len(data)) {
						if _, _, err := DecodeFrame(data[abs:abs+FrameSize(ps)], p, ps); err == nil {
							t.Fatalf("frame at absolute offset of page %d verified", p)
						}
					}
				}
			}
			for _, p := range []uint32{first - 1, first + chunkPages} {
				if p == 0 || (first+chunkPages == 0 && p == first+chunkPages) {
					continue
				}
				if _, err := o.ReadPage(p, nil); !errors.Is(err, ErrPageNotFound) {
					t.Fatalf("ReadPage(%d) outside the chunk: %v", p, err)
				}
			}
		})
	}
}

// Open costs one ReadAt for a small object and two for a large one; every
// ReadPage costs exactly one ReadAt of exactly one frame.
func TestOneReadAtPerPage(t *testing.T) {
	for _, tc := range []struct {
		ps        uint32
		n         int
		openReads int
	}{{512, 4, 1}, {4096, 8, 1}, {4096, 64, 2}, {65536, 3, 2}} {
		h := Header{Kind: KindDelta, PageSize: tc.ps, ObjectID: 1, MinTxid: 1, MaxTxid: 2}
		pgnos := make([]uint32, tc.n)
		for i := range pgnos {
			pgnos[i] = uint32(10 + 3*i)
		}
		data, _, pages := encodeObject(t, h, pgnos)
		cr := &countingReaderAt{r: bytes.NewReader(data)}
		o, err := Open(cr, int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		if calls, _ := cr.reset(); calls != tc.openReads {
			t.Fatalf("page size %d, %d pages (%d bytes): Open made %d reads, want %d", tc.ps, tc.n, len(data), calls, tc.openReads)
		}
		dst := make([]byte, tc.ps)
		for _, p := range slices.Backward(pgnos) {
			got, err := o.ReadPage(p, dst)
			if err != nil || !bytes.Equal(got, pages[p]) {
				t.Fatalf("ReadPage(%d): %v", p, err)
			}
			if calls, n := cr.reset(); calls != 1 || n != FrameSize(tc.ps) {
				t.Fatalf("ReadPage(%d): %d reads of %d bytes, want 1 of %d", p, calls, n, FrameSize(tc.ps))
			}
		}
		if _, err := o.ReadPage(pgnos[0]+1, dst); !errors.Is(err, ErrPageNotFound) {
			t.Fatal(err)
		}
		if calls, _ := cr.reset(); calls != 0 {
			t.Fatalf("a missing page cost %d reads", calls)
		}
	}
}

// region names the part of an object a byte offset falls in.
func region(h Header, off int64) (name string, frame int) {
	dirOff := DirOffset(h.PageSize, h.PageCount)
	switch {
	case off < HeaderSize:
		return "header", -1
	case off < dirOff:
		return "frame", int((off - HeaderSize) / FrameSize(h.PageSize))
	}
	return "tail", -1
}

// checkFlip runs Open, ReadPage of every page and Verify on a damaged
// copy. Damage outside the frames must fail Open; damage inside frame i
// must fail ReadPage of that page only, and Verify. No call may return
// bytes other than the originals, and every error is ErrCorrupt (or
// ErrVersion for the version field).
func checkFlip(t *testing.T, bad []byte, off int64, h Header, pgnos []uint32, pages map[uint32][]byte) {
	t.Helper()
	isVersion := off == hVersion || off == hVersion+1
	wantErr := func(what string, err error) {
		t.Helper()
		if errors.Is(err, ErrCorrupt) || (isVersion && errors.Is(err, ErrVersion)) {
			return
		}
		t.Fatalf("flip at %d: %s: got %v, want ErrCorrupt", off, what, err)
	}
	name, frame := region(h, off)
	o, err := Open(bytes.NewReader(bad), int64(len(bad)))
	// Open's two-read path (objects over 64 KiB) must agree.
	if _, err2 := open(bytes.NewReader(bad), int64(len(bad)), 0); (err == nil) != (err2 == nil) {
		t.Fatalf("flip at %d: Open in one read: %v; in two: %v", off, err, err2)
	}
	if name != "frame" {
		wantErr("Open", err)
		wantErr("Verify", Verify(bytes.NewReader(bad), int64(len(bad))))
		return
	}
	if err != nil {
		t.Fatalf("flip at %d in frame %d: Open: %v (frames are checked by ReadPage)", off, frame, err)
	}
	for i, p := range pgnos {
		got, err := o.ReadPage(p, nil)
		if i == frame {
			wantErr(fmt.Sprintf("ReadPage(%d)", p), err)
			continue
		}
		if err != nil || !bytes.Equal(got, pages[p]) {
			t.Fatalf("flip at %d in frame %d: ReadPage(%d) of an intact frame: %v", off, frame, p, err)
		}
	}
	wantErr("Verify", o.Verify())
}

func TestEverySingleBitFlip(t *testing.T) {
	for _, kind := range []Kind{KindBase, KindDelta} {
		h := Header{Kind: kind, PageSize: 512, ObjectID: 42, MinTxid: 3, MaxTxid: 8}
		pgnos := []uint32{17, 18, 19}
		if kind == KindDelta {
			pgnos = []uint32{5, 9, 70000}
		}
		data, sum, pages := encodeObject(t, h, pgnos)
		h = sum.Header
		bad := slices.Clone(data)
		for off := range int64(len(data)) {
			for bit := range 8 {
				bad[off] ^= 1 << bit
				checkFlip(t, bad, off, h, pgnos, pages)
				bad[off] ^= 1 << bit
			}
		}
	}
}

// A real object over 64 KiB: every bit of header, directory and trailer,
// and a sample of frame bits.
func TestHeavyEverySingleBitFlipLarge(t *testing.T) {
	testutil.Heavy(t)
	h := Header{Kind: KindDelta, PageSize: 4096, ObjectID: 43, MinTxid: 3, MaxTxid: 8}
	pgnos := []uint32{2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765}
	data, sum, pages := encodeObject(t, h, pgnos)
	if len(data) <= openWhole {
		t.Fatalf("object of %d bytes does not exercise the two-read path", len(data))
	}
	h = sum.Header
	dirOff := DirOffset(h.PageSize, h.PageCount)
	bad := slices.Clone(data)
	for off := range int64(len(data)) {
		inFrame := off >= HeaderSize && off < dirOff
		if inFrame && (off-HeaderSize)%FrameSize(h.PageSize) >= FrameHeaderSize && off%61 != 0 {
			continue // sample page bytes; every frame header byte is flipped
		}
		for bit := range 8 {
			bad[off] ^= 1 << bit
			checkFlip(t, bad, off, h, pgnos, pages)
			bad[off] ^= 1 << bit
		}
	}
}

// Every truncation, every extension, and a reader shorter than the size
// it claims: all ErrCorrupt, never a panic.
func TestTruncation(t *testing.T) { testTruncation(t, 512) }

// The same with an object over 64 KiB.
func TestHeavyTruncationLarge(t *testing.T) {
	testutil.Heavy(t)
	testTruncation(t, 4096)
}

func testTruncation(t *testing.T, ps uint32) {
	h := Header{Kind: KindDelta, PageSize: ps, ObjectID: 7, MinTxid: 1, MaxTxid: 1}
	data, _, _ := encodeObject(t, h, []uint32{2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34})
	for n := range len(data) {
		cut := data[:n]
		if _, err := Open(bytes.NewReader(cut), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open of %d of %d bytes: %v", n, len(data), err)
		}
		if _, err := open(bytes.NewReader(cut), int64(n), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open (two reads) of %d of %d bytes: %v", n, len(data), err)
		}
		if err := Verify(bytes.NewReader(cut), int64(n)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Verify of %d of %d bytes: %v", n, len(data), err)
		}
		// The reader holds fewer bytes than the size claimed.
		if _, err := Open(bytes.NewReader(cut), int64(len(data))); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open of %d bytes claiming %d: %v", n, len(data), err)
		}
	}
	long := append(slices.Clone(data), 0)
	if _, err := Open(bytes.NewReader(long), int64(len(long))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open with a trailing byte: %v", err)
	}
	// An object that shrinks after Open: ReadPage and Verify see it.
	o, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	o.r = bytes.NewReader(data[:FrameOffset(ps, 1)+5])
	if _, err := o.ReadPage(4, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadPage of a truncated frame: %v", err)
	}
	if err := o.Verify(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify after truncation: %v", err)
	}
}

// A newer version is ErrVersion even though nothing else in the header
// can be trusted; the hash is recomputed so only the version differs.
func TestNewerVersion(t *testing.T) {
	data, _, _ := encodeObject(t, Header{Kind: KindBase, PageSize: 512, ObjectID: 1, MaxTxid: 1}, seq(1, 2))
	for _, v := range []uint16{2, 3, 0x100, math.MaxUint16} {
		bad := slices.Clone(data)
		binary.LittleEndian.PutUint16(bad[hVersion:], v)
		binary.LittleEndian.PutUint64(bad[hHash:], xxhash.Sum64(bad[:hHash]))
		if _, err := DecodeHeader(bad); !errors.Is(err, ErrVersion) {
			t.Fatalf("DecodeHeader(version %d): %v", v, err)
		}
		if _, err := Open(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrVersion) {
			t.Fatalf("Open(version %d): %v", v, err)
		}
		if err := Verify(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrVersion) {
			t.Fatalf("Verify(version %d): %v", v, err)
		}
	}
	// Version 0 was never written: corrupt, not "newer".
	bad := slices.Clone(data)
	binary.LittleEndian.PutUint16(bad[hVersion:], 0)
	binary.LittleEndian.PutUint64(bad[hHash:], xxhash.Sum64(bad[:hHash]))
	if _, err := Open(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open(version 0): %v", err)
	}
}

// A header whose hash is right but whose fields break the rules (as a
// buggy writer could produce) is still ErrCorrupt.
func TestHeaderRulesOnDecode(t *testing.T) {
	data, _, _ := encodeObject(t, Header{Kind: KindBase, PageSize: 512, ObjectID: 1, MaxTxid: 1}, seq(1, 2))
	for name, edit := range map[string]func(b []byte){
		"kind 0":        func(b []byte) { b[hKind] = 0 },
		"kind 3":        func(b []byte) { b[hKind] = 3 },
		"page size 513": func(b []byte) { binary.LittleEndian.PutUint32(b[hPageSize:], 513) },
		"page size 256": func(b []byte) { binary.LittleEndian.PutUint32(b[hPageSize:], 256) },
		"page size 2^17": func(b []byte) {
			binary.LittleEndian.PutUint32(b[hPageSize:], 1<<17)
		},
		"txids reversed":  func(b []byte) { binary.LittleEndian.PutUint64(b[hMinTxid:], 5) },
		"first pgno 0":    func(b []byte) { binary.LittleEndian.PutUint32(b[hFirstPgno:], 0) },
		"page count 0":    func(b []byte) { binary.LittleEndian.PutUint32(b[hPageCount:], 0) },
		"huge page count": func(b []byte) { binary.LittleEndian.PutUint32(b[hPageCount:], math.MaxUint32) },
		"reserved 1":      func(b []byte) { b[hReserved1] = 1 },
		"reserved 2":      func(b []byte) { b[hReserved2+7] = 1 },
		"base past max pgno": func(b []byte) {
			binary.LittleEndian.PutUint32(b[hFirstPgno:], math.MaxUint32)
		},
	} {
		bad := slices.Clone(data)
		edit(bad)
		binary.LittleEndian.PutUint64(bad[hHash:], xxhash.Sum64(bad[:hHash]))
		if _, err := Open(bytes.NewReader(bad), int64(len(bad))); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Open: %v", name, err)
		}
	}
}

func TestEncoderMisuse(t *testing.T) {
	ok := Header{Kind: KindDelta, PageSize: 512, ObjectID: 1, MinTxid: 1, MaxTxid: 2, FirstPgno: 3, PageCount: 3}
	for name, h := range map[string]Header{
		"kind 0":          {Kind: 0, PageSize: 512, FirstPgno: 1, PageCount: 1},
		"kind 3":          {Kind: 3, PageSize: 512, FirstPgno: 1, PageCount: 1},
		"version 2":       {Version: 2, Kind: KindBase, PageSize: 512, FirstPgno: 1, PageCount: 1},
		"page size 0":     {Kind: KindBase, PageSize: 0, FirstPgno: 1, PageCount: 1},
		"page size 256":   {Kind: KindBase, PageSize: 256, FirstPgno: 1, PageCount: 1},
		"page size 1000":  {Kind: KindBase, PageSize: 1000, FirstPgno: 1, PageCount: 1},
		"page size 4097":  {Kind: KindBase, PageSize: 4097, FirstPgno: 1, PageCount: 1},
		"page size 2^17":  {Kind: KindBase, PageSize: 1 << 17, FirstPgno: 1, PageCount: 1},
		"txids reversed":  {Kind: KindBase, PageSize: 512, MinTxid: 2, MaxTxid: 1, FirstPgno: 1, PageCount: 1},
		"first pgno 0":    {Kind: KindBase, PageSize: 512, FirstPgno: 0, PageCount: 1},
		"page count 0":    {Kind: KindDelta, PageSize: 512, FirstPgno: 1, PageCount: 0},
		"base overflow":   {Kind: KindBase, PageSize: 512, FirstPgno: math.MaxUint32, PageCount: 2},
		"delta overflow":  {Kind: KindDelta, PageSize: 512, FirstPgno: math.MaxUint32 - 1, PageCount: 3},
		"delta huge, bad": {Kind: KindDelta, PageSize: 512, FirstPgno: 2, PageCount: math.MaxUint32},
	} {
		var buf bytes.Buffer
		if _, err := NewEncoder(&buf, h); !errors.Is(err, ErrMisuse) {
			t.Errorf("%s: NewEncoder: %v, want ErrMisuse", name, err)
		}
		if buf.Len() != 0 {
			t.Errorf("%s: a rejected header wrote %d bytes", name, buf.Len())
		}
	}

	// Bad Adds are rejected without writing, and the encoder carries on.
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, ok)
	if err != nil {
		t.Fatal(err)
	}
	pg := func(p uint32) []byte { return pageFor(1, p, 512) }
	steps := []struct {
		pgno uint32
		page []byte
		bad  bool
	}{
		{0, pg(0), true},             // pgno 0
		{4, pg(4), true},             // first must be FirstPgno
		{3, make([]byte, 511), true}, // short page
		{3, make([]byte, 513), true}, // long page
		{3, nil, true},
		{3, pg(3), false},
		{3, pg(3), true}, // duplicate
		{2, pg(2), true}, // descending
		{9, pg(9), false},
		{7, pg(7), true},
		{1 << 20, pg(1 << 20), false},
		{1<<20 + 1, pg(1<<20 + 1), true}, // more than declared
	}
	for i, s := range steps {
		before := buf.Len()
		err := enc.Add(s.pgno, s.page)
		if s.bad != errors.Is(err, ErrMisuse) || (!s.bad && err != nil) {
			t.Fatalf("step %d: Add(%d, %d bytes): %v", i, s.pgno, len(s.page), err)
		}
		if s.bad && buf.Len() != before {
			t.Fatalf("step %d: rejected Add wrote bytes", i)
		}
	}
	sum, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, buf.Bytes(), sum, map[uint32][]byte{3: pg(3), 9: pg(9), 1 << 20: pg(1 << 20)})
	if err := enc.Add(1<<21, pg(1<<21)); !errors.Is(err, ErrMisuse) {
		t.Fatalf("Add after Close: %v", err)
	}
	if again, err := enc.Close(); err != nil || again.Hash != sum.Hash {
		t.Fatalf("second Close: %v", err)
	}

	// Base objects take consecutive pages only.
	enc, _ = NewEncoder(&bytes.Buffer{}, Header{Kind: KindBase, PageSize: 512, FirstPgno: 17, PageCount: 3})
	if err := enc.Add(17, pg(17)); err != nil {
		t.Fatal(err)
	}
	if err := enc.Add(19, pg(19)); !errors.Is(err, ErrMisuse) {
		t.Fatalf("base gap: %v", err)
	}
	if err := enc.Add(18, pg(18)); err != nil {
		t.Fatal(err)
	}
	// Closing short of the declared count fails.
	if _, err := enc.Close(); !errors.Is(err, ErrMisuse) {
		t.Fatalf("Close after 2 of 3 pages: %v", err)
	}
	if _, err := enc.Close(); !errors.Is(err, ErrMisuse) {
		t.Fatalf("second Close after a failed one: %v", err)
	}
}

type failingWriter struct {
	n     int // bytes accepted before failing
	short bool
}

var errDisk = errors.New("disk full")

func (w *failingWriter) Write(p []byte) (int, error) {
	if len(p) <= w.n {
		w.n -= len(p)
		return len(p), nil
	}
	n := w.n
	w.n = 0
	if w.short {
		return n, nil // breaks io.Writer's contract: must become ErrShortWrite
	}
	return n, errDisk
}

func TestEncoderWriteError(t *testing.T) {
	h := Header{Kind: KindBase, PageSize: 512, FirstPgno: 1, PageCount: 4}
	full := ObjectSize(512, 4)
	for _, short := range []bool{false, true} {
		for limit := int64(0); limit < full; limit += 37 {
			w := &failingWriter{n: int(limit), short: short}
			wantErr := func(err error) bool {
				if short {
					return errors.Is(err, io.ErrShortWrite)
				}
				return errors.Is(err, errDisk)
			}
			enc, err := NewEncoder(w, h)
			if err != nil {
				if !wantErr(err) {
					t.Fatalf("limit %d: NewEncoder: %v", limit, err)
				}
				continue
			}
			var failed error
			for p := uint32(1); p <= 4 && failed == nil; p++ {
				failed = enc.Add(p, pageFor(0, p, 512))
			}
			if failed != nil {
				if !wantErr(failed) {
					t.Fatalf("limit %d: Add: %v", limit, failed)
				}
				// Sticky: a later Add and Close report it.
				if err := enc.Add(100, pageFor(0, 100, 512)); !wantErr(err) {
					t.Fatalf("limit %d: Add after failure: %v", limit, err)
				}
			}
			if _, err := enc.Close(); !wantErr(err) {
				t.Fatalf("limit %d: Close: %v", limit, err)
			}
		}
	}
}

func TestDecodeFrame(t *testing.T) {
	const ps = 1024
	page := pageFor(9, 77, ps)
	frame := make([]byte, FrameSize(ps))
	sum := putFrame(frame, 77, page)
	got, hash, err := DecodeFrame(frame, 77, ps)
	if err != nil || !bytes.Equal(got, page) || hash != sum || hash != xxhash.Sum64(page) {
		t.Fatalf("DecodeFrame: %v", err)
	}
	for name, tc := range map[string]struct {
		frame []byte
		pgno  uint32
		ps    uint32
		want  error
	}{
		"other page":    {frame, 78, ps, ErrCorrupt},
		"page 0":        {frame, 0, ps, ErrCorrupt},
		"short":         {frame[:len(frame)-1], 77, ps, ErrCorrupt},
		"long":          {append(slices.Clone(frame), 0), 77, ps, ErrCorrupt},
		"empty":         {nil, 77, ps, ErrCorrupt},
		"other size":    {frame[:FrameSize(512)], 77, 512, ErrCorrupt}, // length field says 1024
		"bad page size": {frame, 77, 1000, ErrMisuse},
		"page size 0":   {frame, 77, 0, ErrMisuse},
	} {
		if _, _, err := DecodeFrame(tc.frame, tc.pgno, tc.ps); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	for off := range len(frame) {
		bad := slices.Clone(frame)
		bad[off] ^= 0x10
		if _, _, err := DecodeFrame(bad, 77, ps); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flip at %d: %v", off, err)
		}
	}
}

func TestDirectoryCopy(t *testing.T) {
	h := Header{Kind: KindDelta, PageSize: 2048, ObjectID: 5, MinTxid: 4, MaxTxid: 6}
	data, sum, _ := encodeObject(t, h, []uint32{4, 5, 100, 16385, 40000})
	cp, err := EncodeDirectory(sum)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(cp)) != HeaderSize+DirLength(5)+TrailerSize {
		t.Fatalf("directory copy of %d bytes", len(cp))
	}
	// Every bit flip and truncation of the copy is ErrCorrupt (or
	// ErrVersion in the version field).
	for off := range len(cp) {
		for bit := range 8 {
			bad := slices.Clone(cp)
			bad[off] ^= 1 << bit
			_, err := DecodeDirectory(bad)
			if !errors.Is(err, ErrCorrupt) && !((off == hVersion || off == hVersion+1) && errors.Is(err, ErrVersion)) {
				t.Fatalf("flip at %d.%d: %v", off, bit, err)
			}
		}
	}
	for n := range len(cp) {
		if _, err := DecodeDirectory(cp[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// A whole object is not a directory copy.
	if _, err := DecodeDirectory(data); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("DecodeDirectory(object): %v", err)
	}
	// Summaries that describe no valid object are refused.
	for name, edit := range map[string]func(s *Summary){
		"count":        func(s *Summary) { s.PageCount++ },
		"entries":      func(s *Summary) { s.Entries = s.Entries[:4] },
		"size":         func(s *Summary) { s.Size++ },
		"order":        func(s *Summary) { s.Entries[1].Pgno, s.Entries[2].Pgno = s.Entries[2].Pgno, s.Entries[1].Pgno },
		"offset":       func(s *Summary) { s.Entries[2].Offset += 16 },
		"index":        func(s *Summary) { s.Entries[3].Index = 4 },
		"length":       func(s *Summary) { s.Entries[0].Length = 1024 },
		"first":        func(s *Summary) { s.Entries[0].Pgno = 3 },
		"header":       func(s *Summary) { s.Header.PageSize = 3000 },
		"base w/ gaps": func(s *Summary) { s.Header.Kind = KindBase },
	} {
		s := sum
		s.Entries = slices.Clone(sum.Entries)
		edit(&s)
		if _, err := EncodeDirectory(s); !errors.Is(err, ErrMisuse) {
			t.Errorf("%s: EncodeDirectory: %v", name, err)
		}
	}
	// A directory copy of another object with the same shape does not
	// decode under this header: the directory hash binds the two.
	h2 := h
	h2.ObjectID = 6
	_, sum2, _ := encodeObject(t, h2, []uint32{4, 5, 100, 16385, 40000})
	cp2, _ := EncodeDirectory(sum2)
	spliced := append(slices.Clone(cp[:HeaderSize]), cp2[HeaderSize:]...)
	if _, err := DecodeDirectory(spliced); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("spliced directory: %v", err)
	}
}

type errReaderAt struct{ err error }

func (r errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, r.err }

// A reader failure (network, disk) is passed through wrapped, not
// reported as corruption: the caller may retry.
func TestReaderError(t *testing.T) {
	boom := errors.New("connection reset")
	for _, size := range []int64{2000, 1 << 20} {
		_, err := Open(errReaderAt{boom}, size)
		if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("Open(size %d): %v", size, err)
		}
	}
	data, _, _ := encodeObject(t, Header{Kind: KindBase, PageSize: 512, MaxTxid: 1}, seq(1, 2))
	o, err := Open(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	o.r = errReaderAt{boom}
	if _, err := o.ReadPage(1, nil); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("ReadPage: %v", err)
	}
	if err := o.Verify(); !errors.Is(err, boom) {
		t.Fatalf("Verify: %v", err)
	}
}

func TestConcurrentReadPage(t *testing.T) {
	h := Header{Kind: KindBase, PageSize: 4096, ObjectID: 3, MaxTxid: 1}
	data, _, pages := encodeObject(t, h, seq(1+16384, 32))
	cr := &countingReaderAt{r: bytes.NewReader(data)}
	o, err := Open(cr, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	cr.reset()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			dst := make([]byte, 4096)
			for i := range 200 {
				p := uint32(1+16384) + uint32((g*7+i*13)%32)
				got, err := o.ReadPage(p, dst)
				if err != nil || !bytes.Equal(got, pages[p]) {
					errs <- fmt.Errorf("ReadPage(%d): %v", p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if calls, _ := cr.reset(); calls != 8*200 {
		t.Fatalf("%d reads for %d page reads", calls, 8*200)
	}
}

// The catalog opens an object from its local directory copy without
// reading the object; pages still cost one ReadAt and are still checked
// against that directory.
func TestFromSummary(t *testing.T) {
	h := Header{Kind: KindDelta, PageSize: 1024, ObjectID: 11, MinTxid: 2, MaxTxid: 3}
	pgnos := []uint32{7, 8, 9000}
	data, sum, pages := encodeObject(t, h, pgnos)
	cp, _ := EncodeDirectory(sum)
	s, err := DecodeDirectory(cp)
	if err != nil {
		t.Fatal(err)
	}
	cr := &countingReaderAt{r: bytes.NewReader(data)}
	o, err := FromSummary(cr, s)
	if err != nil {
		t.Fatal(err)
	}
	if calls, _ := cr.reset(); calls != 0 {
		t.Fatalf("FromSummary read %d times", calls)
	}
	for _, p := range pgnos {
		got, err := o.ReadPage(p, nil)
		if err != nil || !bytes.Equal(got, pages[p]) {
			t.Fatalf("ReadPage(%d): %v", p, err)
		}
		if calls, _ := cr.reset(); calls != 1 {
			t.Fatalf("ReadPage(%d): %d reads", p, calls)
		}
	}
	if err := o.Verify(); err != nil {
		t.Fatal(err)
	}
	// The directory of another object of the same shape: every page
	// fails, none is served.
	h.ObjectID = 12
	other, _, _ := encodeObject(t, h, pgnos)
	wrong, _ := FromSummary(bytes.NewReader(other), s)
	for _, p := range pgnos {
		if _, err := wrong.ReadPage(p, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("ReadPage(%d) through another object's directory: %v", p, err)
		}
	}
	if err := wrong.Verify(); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Verify through another object's directory: %v", err)
	}
	s.Entries = s.Entries[:2]
	if _, err := FromSummary(cr, s); !errors.Is(err, ErrMisuse) {
		t.Fatalf("FromSummary of an inconsistent summary: %v", err)
	}
}

// AddHashed writes the same object as Add when the hash is the page's;
// a wrong hash makes an object that fails Verify.
func TestEncoderAddHashed(t *testing.T) {
	h := Header{Kind: KindDelta, PageSize: 1024, ObjectID: 7, MinTxid: 1, MaxTxid: 2}
	pgnos := []uint32{3, 4, 9}
	want, _, pages := encodeObject(t, h, pgnos)
	for _, wrong := range []bool{false, true} {
		h := h
		h.PageCount, h.FirstPgno = uint32(len(pgnos)), pgnos[0]
		var buf bytes.Buffer
		enc, err := NewEncoder(&buf, h)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pgnos {
			sum := xxhash.Sum64(pages[p])
			if wrong && p == 4 {
				sum ^= 1
			}
			if err := enc.AddHashed(p, pages[p], sum); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := enc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !wrong {
			if !bytes.Equal(buf.Bytes(), want) {
				t.Fatal("AddHashed wrote other bytes than Add")
			}
			checkObject(t, buf.Bytes(), sum, pages)
			continue
		}
		o, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err == nil {
			err = o.Verify()
		}
		if err == nil {
			t.Fatal("an object with a wrong frame hash verified")
		}
	}
}
