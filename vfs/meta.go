package vfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// meta.json in a database's -bop folder says which database this is and how
// its local state began. Its existence marks the state as initialized: it
// is written last by the first open (after the spool, the seal and any
// adopted image are durable, their entries in the folder too), so a crash
// during the first open leaves a folder without it, which the next open
// starts over.
const (
	metaFileName = "meta.json"
	metaFormat   = 1
	maxMetaFile  = 64 << 10
)

// Origins of a database's local state.
const (
	originNew      = "new"      // created empty by bop
	originAdopted  = "adopted"  // an existing file, recorded whole as txid 1
	originTakeover = "takeover" // taken over from the remote (sparse image)
)

type meta struct {
	Format    int    `json:"format"`
	Tenant    string `json:"tenant"`
	Name      string `json:"name"`
	Origin    string `json:"origin"`
	CreatedMs int64  `json:"created_ms"`
	// TSeed is the boundary the image was created or taken over at (0 for
	// a new or adopted database): pages the image never held are read
	// from the remote at this boundary.
	TSeed uint64 `json:"t_seed"`
	// Remote is the store URL the database was created with; "" for the
	// embedded default (a store inside the -bop folder, which moves with
	// it).
	Remote string `json:"remote"`
	// RemoteChecked is false if the first open could not ask the remote
	// whether it already had a database of this name (the remote was
	// unreachable): the publisher must check before its first publish.
	RemoteChecked bool `json:"remote_checked"`
}

func (m *meta) check() error {
	if m.Format < 1 {
		return fmt.Errorf("format %d", m.Format)
	}
	if m.Format > metaFormat {
		return fmt.Errorf("format %d is newer than this bop reads (%d): upgrade bop", m.Format, metaFormat)
	}
	switch m.Origin {
	case originNew, originAdopted, originTakeover:
	default:
		return fmt.Errorf("unknown origin %q", m.Origin)
	}
	if m.Tenant == "" || m.Name == "" {
		return fmt.Errorf("no tenant or name")
	}
	return nil
}

// decodeMeta parses meta.json.
func decodeMeta(b []byte) (*meta, error) {
	if len(b) > maxMetaFile {
		return nil, fmt.Errorf("%d bytes", len(b))
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

// readMeta returns the meta of the state folder dir, or nil if there is
// none yet.
func readMeta(dir string) (*meta, error) {
	path := filepath.Join(dir, metaFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bop: read %s: %w", path, err)
	}
	m, err := decodeMeta(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadState, path, err)
	}
	return m, nil
}

// writeMeta replaces meta.json durably (temp file, fsync, rename, fsync of
// the folder).
//
// Invariant: every entry of the folder created before meta.json (the seal,
// the spool folder, a catalog, an image bitmap) is durable before meta.json
// can be: the folder is fsynced before the rename as well. fsync(2) of a
// file does not persist its entry, and nothing orders the entries of a
// folder before its fsync, so otherwise a power loss could keep meta.json
// and lose the seal (the state damaged for good: ErrBadState) or an
// adopted file's spool (its image record) (TestPowerLossMetaBeforeEntries).
func writeMeta(dir string, m *meta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if err := syncStateDir(dir); err != nil {
		return err
	}
	return writeFileAtomic(dir, metaFileName, b)
}

// writeFileAtomic replaces dir/name with data durably.
func writeFileAtomic(dir, name string, data []byte) error {
	path := filepath.Join(dir, name)
	tmp := path + ".tmp"
	f, err := openStateFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("bop: create %s: %w", tmp, err)
	}
	_, err = f.WriteAt(data, 0) // the file is empty (O_TRUNC)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		removeStateFile(tmp)
		return fmt.Errorf("bop: write %s: %w", tmp, err)
	}
	if err := renameState(tmp, path); err != nil {
		return fmt.Errorf("bop: rename %s: %w", tmp, err)
	}
	return syncStateDir(dir)
}

// syncDir makes the folder's entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("bop: open folder %s: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("bop: fsync folder %s: %w", dir, err)
	}
	return nil
}
