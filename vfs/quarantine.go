package vfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Quarantine: local state that the remote history no longer continues
// (another writer published after this node's last record) is moved, never
// deleted and never published, to
//
//	app.db-bop/quarantine/<UTC time>/
//	    app.db, app.db-wal, app.db-shm, app.db-journal   what existed of them
//	    spool/, image, seal, meta.json                    bop's local state
//	    catalog.db (+ -wal, -shm)                         only if the catalog diverged
//	    reason.json                                       why, when, by whom
//
// The quarantined app.db (with its WAL) is a plain SQLite database holding
// the transactions this node committed that the remote never got; reading
// it needs `sqlite3 'file:app.db?immutable=1'` on a copy.
//
// Invariant: a quarantined spool is never opened by bop again, so none of
// its transactions can be published. The moves are renames inside one
// file system. Before the first one, quarantine.pending (in the -bop
// folder) names the target; it is removed once every move is durable. An
// open that finds it finishes the moves first (resumeQuarantine): with
// meta.json gone the open is a first open, the store has the database and
// the local file is gone, so it rebuilds from the store. A crash while the
// rebuilt state is laid out (seedSparse: meta.json is written last) leaves
// a sparse main file and its bitmap, which a first open removes as
// leftovers.

const quarantineDir = "quarantine"

// quarantinePending names the quarantine folder being filled.
const quarantinePending = "quarantine.pending"

type pendingQuarantine struct {
	Dir     string `json:"dir"`
	Catalog bool   `json:"catalog"`
}

// quarantineMoves lists what quarantine moves: from (full path) -> name in
// the quarantine folder.
func quarantineMoves(path string, withCatalog bool) [][2]string {
	dir := path + "-bop"
	base := filepath.Base(path)
	var moves [][2]string
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		moves = append(moves, [2]string{path + suffix, base + suffix})
	}
	// meta.json first: from then on an interrupted quarantine leaves a
	// state the next open treats as never initialized.
	names := []string{metaFileName, "spool", imageFileName, sealFileName}
	if withCatalog {
		names = append(names, "catalog.db", "catalog.db-wal", "catalog.db-shm")
	}
	var first [][2]string
	for _, n := range names {
		first = append(first, [2]string{filepath.Join(dir, n), n})
	}
	return append(first, moves...)
}

// quarantine moves the local state of the database at path into a new
// quarantine folder and returns it ("" when there was nothing to move).
// withCatalog moves the catalog too.
func quarantine(path, reason string, withCatalog bool, by Owner) (string, error) {
	dir := path + "-bop"
	base := filepath.Base(path)
	found := false
	for _, m := range quarantineMoves(path, withCatalog) {
		fi, err := os.Stat(m[0])
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("quarantine: %w", err)
		}
		if m[1] == base && fi.Size() == 0 {
			continue // an empty main file holds nothing
		}
		found = true
	}
	if !found {
		return "", nil
	}
	now := time.Now().UTC()
	q := filepath.Join(dir, quarantineDir, now.Format("20060102T150405.000000000Z"))
	if err := os.MkdirAll(q, 0o755); err != nil {
		return "", fmt.Errorf("quarantine: %w", err)
	}
	note, err := json.MarshalIndent(struct {
		Reason string    `json:"reason"`
		Time   time.Time `json:"time"`
		By     Owner     `json:"by"`
	}{reason, now, by}, "", "  ")
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(q, "reason.json", append(note, '\n')); err != nil {
		return "", err
	}
	pend, err := json.Marshal(pendingQuarantine{Dir: q, Catalog: withCatalog})
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(dir, quarantinePending, pend); err != nil {
		return "", err
	}
	if err := finishQuarantine(path, q, withCatalog); err != nil {
		return "", err
	}
	return q, nil
}

// finishQuarantine moves whatever of the local state is still in place
// into q, makes the moves durable and removes the pending marker.
func finishQuarantine(path, q string, withCatalog bool) error {
	dir := path + "-bop"
	for _, m := range quarantineMoves(path, withCatalog) {
		err := os.Rename(m[0], filepath.Join(q, m[1]))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("quarantine: move %s: %w", m[0], err)
		}
	}
	for _, d := range []string{q, dir, filepath.Dir(path)} {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	if err := os.Remove(filepath.Join(dir, quarantinePending)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(dir)
}

// resumeQuarantine finishes a quarantine a crash interrupted.
func resumeQuarantine(path string) error {
	dir := path + "-bop"
	b, err := os.ReadFile(filepath.Join(dir, quarantinePending))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", quarantinePending, err)
	}
	p, err := decodePending(b, dir)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrBadState, filepath.Join(dir, quarantinePending), err)
	}
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		return err
	}
	return finishQuarantine(path, p.Dir, p.Catalog)
}

// decodePending parses quarantine.pending of the -bop folder dir: it must
// name a folder directly under dir/quarantine.
func decodePending(b []byte, dir string) (pendingQuarantine, error) {
	var p pendingQuarantine
	if len(b) > maxMetaFile {
		return p, fmt.Errorf("%d bytes", len(b))
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, err
	}
	if p.Dir == "" || filepath.Clean(p.Dir) != p.Dir || filepath.Dir(p.Dir) != filepath.Join(dir, quarantineDir) {
		return p, fmt.Errorf("%q does not name a quarantine folder of %s", p.Dir, dir)
	}
	return p, nil
}
