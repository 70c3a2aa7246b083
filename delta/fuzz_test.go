package delta

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/cespare/xxhash/v2"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus under testdata/fuzz")

// textPage is a page of printable bytes, so seed files stay small in Go's
// quoted corpus format.
func textPage(pgno uint32, pageSize uint32) []byte {
	p := bytes.Repeat([]byte(fmt.Sprintf("page %d; ", pgno)), int(pageSize))[:pageSize]
	return p
}

func encodeText(h Header, pgnos []uint32) []byte {
	h.FirstPgno, h.PageCount = pgnos[0], uint32(len(pgnos))
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, h)
	if err != nil {
		panic(err)
	}
	for _, p := range pgnos {
		if err := enc.Add(p, textPage(p, h.PageSize)); err != nil {
			panic(err)
		}
	}
	if _, err := enc.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// seedObjects are real encoded objects: both kinds, a base of a later
// chunk, a delta spanning chunks, page numbers at the top of the range.
// They stay small: the fuzzer minimises every new input byte by byte, and
// checkOpen runs Open's two-read path on every input anyway.
func seedObjects() map[string][]byte {
	return map[string][]byte{
		"base-512x3":     encodeText(Header{Kind: KindBase, PageSize: 512, ObjectID: 1, MinTxid: 1, MaxTxid: 4}, seq(17, 3)),
		"base-1024x1":    encodeText(Header{Kind: KindBase, PageSize: 1024, ObjectID: 2, MinTxid: 5, MaxTxid: 5}, seq(1, 1)),
		"delta-512x2":    encodeText(Header{Kind: KindDelta, PageSize: 512, ObjectID: 3, MinTxid: 6, MaxTxid: 9}, []uint32{5, 70000}),
		"delta-4096x1":   encodeText(Header{Kind: KindDelta, PageSize: 4096, ObjectID: 4, MinTxid: 10, MaxTxid: 10}, []uint32{1}),
		"delta-512x5":    encodeText(Header{Kind: KindDelta, PageSize: 512, ObjectID: 5, MinTxid: 11, MaxTxid: 20}, []uint32{2, 3, 4, 16385, 16386}),
		"delta-maxpgno":  encodeText(Header{Kind: KindDelta, PageSize: 512, ObjectID: 7, MinTxid: 1, MaxTxid: 2}, []uint32{1<<32 - 2, 1<<32 - 1}),
		"base-512x2-cut": encodeText(Header{Kind: KindBase, PageSize: 512, ObjectID: 8, MinTxid: 1, MaxTxid: 1}, seq(1, 2))[:700],
	}
}

func corpusFile(vals ...any) []byte {
	var b bytes.Buffer
	b.WriteString("go test fuzz v1\n")
	for _, v := range vals {
		switch v := v.(type) {
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		case uint32:
			fmt.Fprintf(&b, "uint32(%d)\n", v)
		default:
			panic(fmt.Sprintf("corpusFile: %T", v))
		}
	}
	return b.Bytes()
}

// seedCorpus is the committed seed corpus, by fuzz target and file name.
func seedCorpus() map[string]map[string][]byte {
	objs := seedObjects()
	c := map[string]map[string][]byte{"FuzzOpen": {}, "FuzzDecodeFrame": {}, "FuzzDecodeDirectory": {}}
	for name, data := range objs {
		c["FuzzOpen"]["seed-"+name] = corpusFile(data)
		o, err := Open(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			continue // the truncated seed
		}
		dir, err := EncodeDirectory(o.Summary())
		if err != nil {
			panic(err)
		}
		c["FuzzDecodeDirectory"]["seed-"+name] = corpusFile(dir)
		h := o.Header()
		if h.PageSize <= 4096 {
			e := o.Directory()[len(o.Directory())-1]
			frame := data[e.Offset : e.Offset+FrameSize(h.PageSize)]
			c["FuzzDecodeFrame"]["seed-"+name] = corpusFile(frame, e.Pgno, h.PageSize)
			c["FuzzDecodeFrame"]["seed-"+name+"-otherpage"] = corpusFile(frame, e.Pgno+1, h.PageSize)
		}
	}
	return c
}

// TestFuzzSeedCorpus keeps testdata/fuzz in step with the encoder: the
// seeds must be real objects of the current format. Regenerate with
//
//	go test ./delta -run TestFuzzSeedCorpus -update-corpus
//
// Other files in those folders (crashers found by fuzzing) are left alone.
func TestFuzzSeedCorpus(t *testing.T) {
	for target, files := range seedCorpus() {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, want := range files {
			path := filepath.Join(dir, name)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s is missing or stale (%v): run go test ./delta -run TestFuzzSeedCorpus -update-corpus", path, err)
			}
		}
	}
}

func FuzzOpen(f *testing.F) {
	for _, data := range seedObjects() {
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Hashes make most mutations fail early; the rehashed copy
		// reaches the field and layout checks behind them.
		checkOpen(t, data)
		checkOpen(t, rehashObject(data))
	})
}

func checkOpen(t *testing.T, data []byte) {
	size := int64(len(data))
	o, err := Open(bytes.NewReader(data), size)
	// The same through the two-read path.
	o2, err2 := open(bytes.NewReader(data), size, 0)
	if (err == nil) != (err2 == nil) || (err == nil && !slices.Equal(o.Directory(), o2.Directory())) {
		t.Fatalf("Open in one read: %v; in two reads: %v", err, err2)
	}
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("Open: %v", err)
		}
		if verr := Verify(bytes.NewReader(data), size); verr == nil {
			t.Fatalf("Open failed (%v) but Verify passed", err)
		}
		return
	}
	h := o.Header()
	allPages := true
	for _, e := range o.Directory() {
		page, err := o.ReadPage(e.Pgno, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadPage(%d): %v", e.Pgno, err)
			}
			allPages = false
			continue
		}
		if uint32(len(page)) != h.PageSize || xxhash.Sum64(page) != e.Hash {
			t.Fatalf("ReadPage(%d) returned bytes that do not match the directory", e.Pgno)
		}
	}
	// The directory copy of anything Open accepts decodes to the same.
	cp, err := EncodeDirectory(o.Summary())
	if err != nil {
		t.Fatalf("EncodeDirectory of an opened object: %v", err)
	}
	if back, err := DecodeDirectory(cp); err != nil || back.Header != h || !slices.Equal(back.Entries, o.Directory()) {
		t.Fatalf("DecodeDirectory(EncodeDirectory): %v", err)
	}
	verr := o.Verify()
	if verr != nil {
		if !errors.Is(verr, ErrCorrupt) {
			t.Fatalf("Verify: %v", verr)
		}
		return
	}
	if !allPages {
		t.Fatal("Verify passed an object with an unreadable page")
	}
	// An object that verifies is canonical: re-encoding its pages
	// gives the same bytes.
	var buf bytes.Buffer
	enc, err := NewEncoder(&buf, h)
	if err != nil {
		t.Fatalf("NewEncoder(%+v) of a verified header: %v", h, err)
	}
	for _, e := range o.Directory() {
		page, _ := o.ReadPage(e.Pgno, nil)
		if err := enc.Add(e.Pgno, page); err != nil {
			t.Fatalf("re-encode page %d: %v", e.Pgno, err)
		}
	}
	sum, err := enc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) || sum.Hash != o.Hash() {
		t.Fatal("a verified object differs from its re-encoding")
	}
}

func FuzzDecodeFrame(f *testing.F) {
	for _, data := range seedObjects() {
		if len(data) > HeaderSize+int(FrameSize(512)) {
			f.Add(data[HeaderSize:HeaderSize+FrameSize(512)], uint32(17), uint32(512))
		}
	}
	f.Add([]byte{}, uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, frame []byte, pgno uint32, pageSize uint32) {
		checkFrame(t, frame, pgno, pageSize)
		if len(frame) >= FrameHeaderSize {
			fixed := slices.Clone(frame)
			binary.LittleEndian.PutUint64(fixed[8:], xxhash.Sum64(fixed[FrameHeaderSize:]))
			checkFrame(t, fixed, pgno, pageSize)
		}
	})
}

func checkFrame(t *testing.T, frame []byte, pgno uint32, pageSize uint32) {
	page, hash, err := DecodeFrame(frame, pgno, pageSize)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrMisuse) {
			t.Fatalf("DecodeFrame: %v", err)
		}
		return
	}
	if uint32(len(page)) != pageSize || hash != xxhash.Sum64(page) {
		t.Fatal("DecodeFrame accepted a page of the wrong size or hash")
	}
	again := make([]byte, len(frame))
	if putFrame(again, pgno, page); !bytes.Equal(again, frame) {
		t.Fatal("an accepted frame differs from its re-encoding")
	}
}

func FuzzDecodeDirectory(f *testing.F) {
	for _, data := range seedObjects() {
		if o, err := Open(bytes.NewReader(data), int64(len(data))); err == nil {
			cp, _ := EncodeDirectory(o.Summary())
			f.Add(cp)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDirectory(t, b)
		checkDirectory(t, rehashDirectory(b))
	})
}

func checkDirectory(t *testing.T, b []byte) {
	s, err := DecodeDirectory(b)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
			t.Fatalf("DecodeDirectory: %v", err)
		}
		return
	}
	again, err := EncodeDirectory(s)
	if err != nil {
		t.Fatalf("EncodeDirectory of a decoded directory: %v", err)
	}
	if !bytes.Equal(again, b) {
		t.Fatal("an accepted directory copy differs from its re-encoding")
	}
}

// rehashObject returns a copy of b with every hash recomputed where b's
// own (unchecked) header fields say it lies: header hash, directory hash,
// content hash, trailer hash. Frames are left alone.
func rehashObject(b []byte) []byte {
	b = slices.Clone(b)
	if len(b) < HeaderSize {
		return b
	}
	binary.LittleEndian.PutUint64(b[hHash:], xxhash.Sum64(b[:hHash]))
	ps := binary.LittleEndian.Uint32(b[hPageSize:])
	n := binary.LittleEndian.Uint32(b[hPageCount:])
	if !ValidPageSize(ps) || ObjectSize(ps, n) != int64(len(b)) {
		return b
	}
	fixDirHash(b[:HeaderSize], b[DirOffset(ps, n):len(b)-TrailerSize])
	fixTrailer(b[len(b)-TrailerSize:], xxhash.Sum64(b[:len(b)-TrailerSize]))
	return b
}

// rehashDirectory is rehashObject for a directory copy.
func rehashDirectory(b []byte) []byte {
	b = slices.Clone(b)
	if len(b) < HeaderSize {
		return b
	}
	binary.LittleEndian.PutUint64(b[hHash:], xxhash.Sum64(b[:hHash]))
	n := binary.LittleEndian.Uint32(b[hPageCount:])
	if int64(len(b)) != HeaderSize+DirLength(n)+TrailerSize {
		return b
	}
	fixDirHash(b[:HeaderSize], b[HeaderSize:len(b)-TrailerSize])
	t := b[len(b)-TrailerSize:]
	fixTrailer(t, binary.LittleEndian.Uint64(t[tContentHash:]))
	return b
}

func fixDirHash(hdr, dir []byte) {
	d := xxhash.New()
	d.Write(hdr)
	d.Write(dir[:len(dir)-DirHashSize])
	binary.LittleEndian.PutUint64(dir[len(dir)-DirHashSize:], d.Sum64())
}

func fixTrailer(t []byte, contentHash uint64) {
	binary.LittleEndian.PutUint64(t[tContentHash:], contentHash)
	binary.LittleEndian.PutUint64(t[tHash:], xxhash.Sum64(t[:tHash]))
}
