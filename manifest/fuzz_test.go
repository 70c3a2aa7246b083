package manifest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// The decoders of bytes from the store must never panic and must either
// fail or return a value that re-encodes to an equivalent value.

func FuzzDecodeRecord(f *testing.F) {
	r := &Record{Format: RecordFormat, Seq: 3, Kind: KindPublish, Epoch: 2, Writer: "w", Parent: Parent{Seq: 2, Txid: 4},
		Txid: 5, DBPages: 9, PageSize: 4096, ChunkPages: 4, CreatedMs: 1,
		Added:   []ObjectAdded{{ID: 7, Kind: ObjectDelta, Key: "default/x/obj/delta-0000000000000007-00000000000000aa", Size: 100, Hash: 0xaa, FirstPgno: 2, PageCount: 2, MinTxid: 5, MaxTxid: 5, Chunks: []uint32{0, 1}}},
		Retired: []ObjectRetired{{ID: 1, Chunks: []uint32{0}}}}
	b, _ := EncodeRecord(r)
	f.Add(b)
	f.Add([]byte(`{"bop":"log","v":1,"xxh64":"0000000000000000","body":{}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"format":1,"seq":1,"kind":"takeover","epoch":1,"writer":"w","parent":{"seq":0,"txid":0},"txid":0,"db_pages":0,"page_size":4096,"chunk_pages":4,"created_ms":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		// As a whole envelope, and as a body inside a valid envelope (so
		// the body decoder is reached past the hash check).
		decodeRecordTwice(t, data)
		decodeRecordTwice(t, sealRaw("log", data))
	})
}

func sealRaw(kind string, body []byte) []byte {
	var v map[string]any
	if json.Unmarshal(body, &v) != nil {
		return body
	}
	b, _ := json.Marshal(envelope{Kind: kind, V: envelopeVersion, XXH64: Hash(xxhash.Sum64(body)), Body: body})
	return b
}

func decodeRecordTwice(t *testing.T, data []byte) {
	{
		rec, err := DecodeRecord("log/x", data)
		if err != nil {
			return
		}
		if err := rec.checkShape(); err != nil {
			t.Fatalf("decoded record fails its shape check: %v", err)
		}
		again, err := EncodeRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRecord("log/x", again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
	}
}

func FuzzDecodeHead(f *testing.F) {
	b, _ := EncodeHead(&Head{Format: HeadFormat, Epoch: 3, Seq: 9, Txid: 4, PageSize: 4096, ChunkPages: 16384, Writer: "w",
		RenewedMs: 5, Snapshot: &SnapshotRef{Seq: 8, Size: 4096, Hash: 1}})
	f.Add(b)
	f.Add([]byte(`{"bop":"head","v":2,"xxh64":"0000000000000000","body":{}}`))
	f.Add([]byte(`{"format":1,"epoch":1,"seq":0,"txid":0,"page_size":4096,"chunk_pages":4,"writer":"w","renewed_ms":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 && data[0] == '{' && !bytes.Contains(data, []byte(`"bop"`)) {
			data = sealRaw("head", data)
		}
		h, err := DecodeHead("head", data)
		if err != nil {
			return
		}
		again, _ := EncodeHead(h)
		h2, err := DecodeHead("head", again)
		if err != nil || h.Snapshot != nil && (h2.Snapshot == nil || *h2.Snapshot != *h.Snapshot) {
			t.Fatalf("re-encoded head: %v", err)
		}
	})
}

func FuzzDecodePin(f *testing.F) {
	b, _ := sealEnvelope("pin", &Pin{Format: PinFormat, ID: "r1", Boundary: 5, Owner: "node", ExpiresMs: 9})
	f.Add(b)
	f.Add([]byte(`{"bop":"pin","v":1,"xxh64":"zz","body":{"format":1}}`))
	f.Add([]byte(`{"format":1,"id":"r1","boundary":5,"owner":"n","created_ms":1,"expires_ms":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 0 && data[0] == '{' && !bytes.Contains(data, []byte(`"bop"`)) {
			data = sealRaw("pin", data)
		}
		p, err := decodePin("pins/r1.pin", "r1", data)
		if err != nil {
			return
		}
		if p.ID != "r1" || p.Owner == "" {
			t.Fatalf("accepted pin %+v", p)
		}
	})
}
