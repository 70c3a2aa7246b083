package manifest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"

	_ "embed"
)

// The file a new catalog starts from: an empty catalog (every table of
// schema version SchemaVersion, user_version set, no meta row), already
// in WAL mode, exactly as the migrations make it (TestCatalogTemplate
// rebuilds it and compares). Writing it costs one file fsync; creating a
// catalog through SQLite costs the parse of every CREATE statement three
// times over (the statement, SQLite's reread of sqlite_schema, and the
// select that rereads it) and the rollback-journal transaction that
// switches an empty file to WAL (two fsyncs and one of the folder).
const templateFile = "catalog_template.db.gz"

//go:embed catalog_template.db.gz
var templateGz []byte

var catalogTemplate = sync.OnceValues(func() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(templateGz))
	if err != nil {
		return nil, fmt.Errorf("manifest: catalog template: %w", err)
	}
	// The gzip trailer's last word is the uncompressed size: read into a
	// buffer of exactly that size (io.ReadAll's doublings allocated three
	// times as much, in a process whose every allocation brings its
	// first garbage collection nearer).
	size := 1 << 20
	if n := len(templateGz); n >= 4 {
		size = min(size, int(binary.LittleEndian.Uint32(templateGz[n-4:])))
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(zr, b); err != nil {
		return nil, fmt.Errorf("manifest: catalog template: %w", err)
	}
	// Reading on to the end checks the trailer's CRC.
	switch n, err := zr.Read(make([]byte, 1)); {
	case n != 0:
		return nil, fmt.Errorf("manifest: catalog template: longer than its trailer says")
	case err != io.EOF:
		return nil, fmt.Errorf("manifest: catalog template: %w", err)
	}
	return b, nil
})

// writeTemplate creates the catalog file at path from the template,
// durably and atomically: written to path+".new", fsynced, renamed. A
// crash leaves either no catalog (created again) or the whole template,
// never a torn file. The rename itself is made durable with the folder by
// the catalog's first durable commit (SQLite's VFS syncs the folder at a
// new WAL's first sync; the WAL is in the same folder): until then a crash
// may lose it, which loses nothing but the creation.
func writeTemplate(path string) error {
	b, err := catalogTemplate()
	if err != nil {
		return err
	}
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("manifest: create catalog %s: %w", path, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("manifest: create catalog %s: %w", path, err)
	}
	return nil
}
