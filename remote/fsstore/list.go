package fsstore

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bopstore/bop/remote"
)

// List walks the key tree in key order. A directory walk in name order is
// not key order: '-' and '.' sort before '/', so key "a-b" comes before
// "a/c" although folder "a" comes before file "a-b". Each folder's entries
// are therefore sorted with a '/' appended to folder names; since every key
// below folder "a" starts with "a/", the walk then yields keys in byte
// order. Only the folders the prefix can reach are read. Entries whose
// names cannot be key segments (the reserved "#bop", stray files) are
// skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	if err := remote.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("fsstore: list: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: list %q: %w", prefix, err)
	}
	// Start in the deepest folder the prefix names in full; the rest of
	// the prefix filters that folder's entries by name.
	dirKey, namePrefix := "", prefix
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		dirKey, namePrefix = prefix[:i+1], prefix[i+1:]
	}
	return s.walk(ctx, dirKey, namePrefix, fn)
}

type listEntry struct {
	name  string
	isDir bool
	sort  string // name, plus '/' for a folder
}

// walk lists folder dirKey ("" or ending in '/'), entries starting with
// namePrefix only, recursing into folders.
func (s *Store) walk(ctx context.Context, dirKey, namePrefix string, fn func(remote.ObjectInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fsstore: list: %w", err)
	}
	dir := s.root
	if dirKey != "" {
		dir = s.path(strings.TrimSuffix(dirKey, "/"))
	}
	des, err := os.ReadDir(dir)
	if notFound(err) {
		return nil // no such folder, or removed by a concurrent Delete
	}
	if err != nil {
		return fmt.Errorf("fsstore: list: %w", err)
	}
	entries := make([]listEntry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, namePrefix) || remote.ValidateKey(name) != nil {
			continue
		}
		switch {
		case de.IsDir():
			entries = append(entries, listEntry{name: name, isDir: true, sort: name + "/"})
		case de.Type().IsRegular():
			entries = append(entries, listEntry{name: name, sort: name})
		}
	}
	slices.SortFunc(entries, func(a, b listEntry) int { return strings.Compare(a.sort, b.sort) })
	for i, e := range entries {
		key := dirKey + e.name
		if remote.ValidateKey(key) != nil {
			continue // too long to be a key: not made by a Put
		}
		if e.isDir {
			if err := s.walk(ctx, key+"/", "", fn); err != nil {
				return err
			}
			continue
		}
		if i%256 == 255 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("fsstore: list: %w", err)
			}
		}
		fi, err := os.Lstat(filepath.Join(dir, e.name))
		if notFound(err) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return fmt.Errorf("fsstore: list: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		if err := fn(objectInfo(key, fi)); err != nil {
			return err
		}
	}
	return nil
}
