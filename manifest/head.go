package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bopstore/bop/remote"
)

// HeadFormat is the version of the head body this code writes and reads.
const HeadFormat = 1

// Head is the small JSON object at <db>/head. It is advanced with If-Match
// after records are created; it may lag the log (the log is the truth), but
// its Seq is always a seq that exists, so a log walk that ends below it
// means records are missing.
//
// Epochs come only from head bumps (If-Match, or If-None-Match for a new
// database), so no two takers share an epoch.
type Head struct {
	Format     int          `json:"format"`
	Epoch      uint64       `json:"epoch"`
	Seq        uint64       `json:"seq"`  // a recent seq (lower bound of the log's end)
	Txid       uint64       `json:"txid"` // txid of Seq
	PageSize   uint32       `json:"page_size"`
	ChunkPages uint32       `json:"chunk_pages"`
	Writer     string       `json:"writer"`
	RenewedMs  int64        `json:"renewed_ms"` // last publish or renewal by Writer
	Released   bool         `json:"released,omitempty"`
	Snapshot   *SnapshotRef `json:"snapshot,omitempty"`
}

// SnapshotRef names the newest full catalog snapshot, manifest/<seq>.db,
// with the size and xxhash64 its download must match.
type SnapshotRef struct {
	Seq  uint64 `json:"seq"`
	Size int64  `json:"size"`
	Hash Hash   `json:"hash"`
}

// Renewed is the time of the owner's last publish or renewal.
func (h *Head) Renewed() time.Time { return time.UnixMilli(h.RenewedMs) }

func (h *Head) check(key string) error {
	if h.Epoch == 0 {
		return corruptf(key, "head epoch 0")
	}
	if err := checkPageSize(h.PageSize); err != nil {
		return corruptf(key, "%v", err)
	}
	if h.ChunkPages == 0 {
		return corruptf(key, "head chunk_pages 0")
	}
	if h.Writer == "" {
		return corruptf(key, "head without writer")
	}
	if s := h.Snapshot; s != nil && (s.Seq == 0 || s.Size <= 0) {
		return corruptf(key, "head snapshot seq %d size %d", s.Seq, s.Size)
	}
	return nil
}

// EncodeHead returns the envelope bytes of h.
func EncodeHead(h *Head) ([]byte, error) { return sealEnvelope("head", h) }

// DecodeHead parses and verifies a head read from key.
func DecodeHead(key string, data []byte) (*Head, error) {
	var h Head
	if err := openEnvelope(key, "head", data, HeadFormat, &h); err != nil {
		return nil, err
	}
	if err := h.check(key); err != nil {
		return nil, err
	}
	return &h, nil
}

// GetHead reads the head. A missing head returns (nil, "", ErrNotFound).
func GetHead(ctx context.Context, store remote.Store, layout remote.Layout) (*Head, string, error) {
	key := layout.Head()
	data, info, err := getSmall(ctx, store, key)
	if err != nil {
		return nil, "", err
	}
	h, err := DecodeHead(key, data)
	if err != nil {
		return nil, "", err
	}
	return h, info.ETag, nil
}

// putHead writes h conditionally: etag "" creates it (If-None-Match),
// otherwise it replaces exactly that version (If-Match).
func putHead(ctx context.Context, store remote.Store, layout remote.Layout, h *Head, etag string) (string, error) {
	data, err := EncodeHead(h)
	if err != nil {
		return "", err
	}
	opts := remote.PutOptions{Size: int64(len(data))}
	if etag == "" {
		opts.IfNoneMatch = true
	} else {
		opts.IfMatch = etag
	}
	res, err := store.Put(ctx, layout.Head(), bytes.NewReader(data), opts)
	if err != nil {
		return "", fmt.Errorf("manifest: put %s: %w", layout.Head(), err)
	}
	return res.ETag, nil
}

// getSmall reads a whole small object (bounded).
func getSmall(ctx context.Context, store remote.Store, key string) ([]byte, remote.ObjectInfo, error) {
	rc, info, err := store.Get(ctx, key, 0, -1)
	if err != nil {
		if errors.Is(err, remote.ErrNotFound) {
			return nil, info, fmt.Errorf("manifest: get %s: %w", key, remote.ErrNotFound)
		}
		return nil, info, fmt.Errorf("manifest: get %s: %w", key, err)
	}
	defer rc.Close()
	data, err := readAllLimit(rc, maxEnvelope, key)
	if err != nil {
		return nil, info, err
	}
	if info.Size > 0 && int64(len(data)) != info.Size {
		return nil, info, corruptf(key, "read %d bytes, store says %d (truncated)", len(data), info.Size)
	}
	return data, info, nil
}
