package vfs

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
)

// Every decoder of bytes bop reads from its local state is fuzzed: the
// seal, the image bitmap, meta.json and the lock file. None may panic, and
// what decodes must encode back to itself.

func sealSeeds() [][]byte {
	var out [][]byte
	for _, st := range []sealState{
		{seq: 1, open: true, main: fileStat{Present: true, Size: 4096, MtimeNs: 1700000000123456789, Ino: 42}},
		{seq: 2, busy: true, open: true, main: fileStat{Present: true, Size: 8192, MtimeNs: 1, Ino: 7}},
		{seq: 3, main: fileStat{Present: true, Size: 0}, wal: fileStat{Present: true, Size: 32, MtimeNs: 5, Ino: 9}},
	} {
		b := make([]byte, 2*sealSlotSize)
		st.encode(b[(st.seq%2)*sealSlotSize:])
		out = append(out, b)
	}
	return out
}

func FuzzDecodeSeal(f *testing.F) {
	for _, b := range sealSeeds() {
		f.Add(b)
		f.Add(b[:sealSlotSize+10])
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, ok, err := decodeSealFile(b)
		if err != nil || !ok {
			return
		}
		buf := make([]byte, sealSlotSize)
		st.encode(buf)
		again, ok, err := decodeSeal(buf)
		if err != nil || !ok || again != st {
			t.Fatalf("seal %+v re-decodes as %+v %v %v", st, again, ok, err)
		}
	})
}

func imageSeeds() [][]byte {
	bits := []byte{0xff, 0x0f, 0x01}
	return [][]byte{
		encodeImage(imageHeader{PageSize: 4096, SeedPages: 20, TSeed: 7}, bits),
		encodeImage(imageHeader{PageSize: 512, SeedPages: 8, TSeed: 1}, []byte{0x80}),
		encodeImage(imageHeader{PageSize: 65536, SeedPages: 0, TSeed: 0}, nil),
	}
}

func FuzzDecodeImage(f *testing.F) {
	for _, b := range imageSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, bits, err := decodeImage(b)
		if err != nil {
			return
		}
		if again := encodeImage(h, bits); !bytes.Equal(again, b) {
			t.Fatalf("image %+v re-encodes differently", h)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	m, _ := json.Marshal(meta{Format: 1, Tenant: "default", Name: "app.db", Origin: originAdopted, CreatedMs: 1, TSeed: 3, RemoteChecked: true})
	f.Add(m)
	f.Add([]byte(`{"format":2,"tenant":"a","name":"b","origin":"new"}`))
	f.Add([]byte(`{"format":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		if err := m.check(); err != nil {
			t.Fatalf("decodeMeta accepted %q: %v", b, err)
		}
	})
}

func FuzzDecodeOwner(f *testing.F) {
	f.Add([]byte(`{"pid":42,"host":"h","started":"2026-01-02T03:04:05Z","writer":"w","vfs":"bop"}` + "\n"))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOwner(b)
		if err == nil {
			_ = o.String()
		}
	})
}

func FuzzDecodePending(f *testing.F) {
	const dir = "/data/app.db-bop"
	f.Add([]byte(`{"dir":"/data/app.db-bop/quarantine/20260101T000000.000000000Z","catalog":false}`))
	f.Add([]byte(`{"dir":"/data/app.db-bop/quarantine/../../etc","catalog":true}`))
	f.Add([]byte(`{"dir":"/data/app.db-bop/quarantine"}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePending(b, dir)
		if err != nil {
			return
		}
		// Whatever it accepts stays inside the quarantine folder.
		if filepath.Dir(p.Dir) != filepath.Join(dir, quarantineDir) || filepath.Clean(p.Dir) != p.Dir || filepath.Base(p.Dir) == ".." {
			t.Fatalf("accepted %q", p.Dir)
		}
	})
}
