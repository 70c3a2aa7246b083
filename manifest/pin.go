package manifest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bopstore/bop/remote"
)

// PinFormat is the version of the remote pin body.
const PinFormat = 1

// Pin is a remote retention hold, pins/<id>.pin: a replica, restore or
// fork on another node keeps Boundary readable until Expires. GC lists
// pins (an administrative path) and keeps every object a live pin needs.
type Pin struct {
	Format    int    `json:"format"`
	ID        string `json:"id"`
	Boundary  uint64 `json:"boundary"` // txid
	Owner     string `json:"owner"`
	Reason    string `json:"reason,omitempty"`
	CreatedMs int64  `json:"created_ms"`
	ExpiresMs int64  `json:"expires_ms"` // 0: never (a fork's permanent pin)
}

// Expired reports whether the pin has expired at now.
func (p *Pin) Expired(now time.Time) bool {
	return p.ExpiresMs != 0 && now.UnixMilli() >= p.ExpiresMs
}

// PutPin writes (or replaces) a remote pin.
func PutPin(ctx context.Context, store remote.Store, layout remote.Layout, p Pin) error {
	key, err := layout.Pin(p.ID)
	if err != nil {
		return fmt.Errorf("manifest: pin: %w", err)
	}
	if p.Owner == "" {
		return fmt.Errorf("manifest: pin %s: no owner", p.ID)
	}
	p.Format = PinFormat
	if p.CreatedMs == 0 {
		p.CreatedMs = time.Now().UnixMilli()
	}
	data, err := sealEnvelope("pin", &p)
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, key, bytes.NewReader(data), remote.PutOptions{Size: int64(len(data))}); err != nil {
		return fmt.Errorf("manifest: put %s: %w", key, err)
	}
	return nil
}

// GetPin reads a remote pin; a missing pin wraps remote.ErrNotFound.
func GetPin(ctx context.Context, store remote.Store, layout remote.Layout, id string) (*Pin, error) {
	key, err := layout.Pin(id)
	if err != nil {
		return nil, fmt.Errorf("manifest: pin: %w", err)
	}
	data, _, err := getSmall(ctx, store, key)
	if err != nil {
		return nil, err
	}
	return decodePin(key, id, data)
}

func decodePin(key, id string, data []byte) (*Pin, error) {
	var p Pin
	if err := openEnvelope(key, "pin", data, PinFormat, &p); err != nil {
		return nil, err
	}
	if p.ID != id {
		return nil, corruptf(key, "pin body names id %q", p.ID)
	}
	if p.Owner == "" {
		return nil, corruptf(key, "pin without owner")
	}
	return &p, nil
}

// DeletePin removes a remote pin (missing is not an error).
func DeletePin(ctx context.Context, store remote.Store, layout remote.Layout, id string) error {
	key, err := layout.Pin(id)
	if err != nil {
		return fmt.Errorf("manifest: pin: %w", err)
	}
	if err := store.Delete(ctx, key); err != nil {
		return fmt.Errorf("manifest: delete %s: %w", key, err)
	}
	return nil
}

// ListPins reads every remote pin, for GC (an administrative path: it
// lists). A pin that fails its integrity check is returned as an error
// naming its key: GC must not delete what an unreadable pin may hold.
func ListPins(ctx context.Context, store remote.Store, layout remote.Layout) ([]Pin, error) {
	var keys []string
	err := store.List(ctx, layout.PinPrefix(), func(info remote.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("manifest: list %s: %w", layout.PinPrefix(), err)
	}
	var pins []Pin
	for _, key := range keys {
		id, ok := strings.CutSuffix(strings.TrimPrefix(key, layout.PinPrefix()), ".pin")
		if !ok {
			continue // not a pin (e.g. a temporary upload)
		}
		data, _, err := getSmall(ctx, store, key)
		if errors.Is(err, remote.ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, err
		}
		p, err := decodePin(key, id, data)
		if err != nil {
			return nil, err
		}
		pins = append(pins, *p)
	}
	return pins, nil
}
