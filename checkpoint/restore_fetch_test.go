package checkpoint

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/remote/fault"
)

// getLog records every Get a restore sends.
type getLog struct {
	remote.Store
	mu   sync.Mutex
	gets []getCall
}

type getCall struct {
	key    string
	off, n int64
}

func (g *getLog) Get(ctx context.Context, key string, off, n int64) (io.ReadCloser, remote.ObjectInfo, error) {
	g.mu.Lock()
	g.gets = append(g.gets, getCall{key, off, n})
	g.mu.Unlock()
	return g.Store.Get(ctx, key, off, n)
}

// spans resolves every page of snap: per object key, the first and last
// frame the boundary uses.
func spans(t *testing.T, snap *manifest.Snapshot) map[string][2]uint32 {
	t.Helper()
	out := map[string][2]uint32{}
	for p := uint32(1); p <= snap.DBPages(); p++ {
		loc, err := snap.Resolve(p)
		must(t, err)
		if loc.Kind != manifest.InObject {
			continue
		}
		s, ok := out[loc.Object.Key]
		if !ok {
			s = [2]uint32{loc.Frame, loc.Frame}
		}
		out[loc.Object.Key] = [2]uint32{min(s[0], loc.Frame), max(s[1], loc.Frame)}
	}
	return out
}

// shrunk publishes 5 bases of 8 pages, deltas over them (one run across
// the chunk boundary 8|9), then shrinks the database into the third chunk
// and regrows it: the third base is used for 2 of its 8 frames, the last
// two not at all.
func shrunk(t *testing.T, store remote.Store) (*synth, []uint64) {
	s := newSynth(t, store, synthOpts{chunkPages: 8, seed: 61, keep: true})
	p := s.publisher(nil)
	s.commit(40, nil, true)
	b := []uint64{publishNow(t, p)}
	s.commit(40, []uint32{3, 7, 8, 9, 10, 11, 30}, false)
	b = append(b, publishNow(t, p))
	s.commit(40, []uint32{8, 9}, false)
	b = append(b, publishNow(t, p))
	s.commit(18, nil, false)
	s.commit(20, []uint32{19, 20}, false)
	b = append(b, publishNow(t, p))
	return s, b
}

// Whole-object versus ranged fetch: with default options (a database this
// small is one region) every object the
// boundary uses is fetched exactly once, objects it does not use never; a
// GET without a range is only sent for an object whose used frames are at
// least 7/8 of it, any other GET asks for exactly the used frames.
func TestRestoreFetchSelection(t *testing.T) {
	s, boundaries := shrunk(t, fsStore(t))
	log := &getLog{Store: s.store}
	var whole, ranged int
	for _, b := range boundaries {
		log.gets = nil
		snap, err := s.cat.SnapshotAt(b)
		must(t, err)
		path := filepath.Join(t.TempDir(), "r.db")
		res, err := Restore(context.Background(), RestoreOptions{Store: log, Catalog: s.cat, Txid: b, Path: path})
		must(t, err)
		got, _ := os.ReadFile(path)
		sameBytes(t, "restore", got, s.byTxid[b], 4096)
		used := spans(t, snap)
		if int(res.Gets) != len(used) || len(log.gets) != len(used) {
			t.Fatalf("boundary %d: %d GETs (%d logged) for %d objects", b, res.Gets, len(log.gets), len(used))
		}
		sizes := map[string]*manifest.ObjectRef{}
		for _, o := range snap.Objects() {
			sizes[o.Key] = o
		}
		for _, g := range log.gets {
			sp, ok := used[g.key]
			if !ok {
				t.Fatalf("boundary %d: GET of %s, which it does not use", b, g.key)
			}
			delete(used, g.key)
			o := sizes[g.key]
			if g.off == 0 && g.n < 0 {
				if (sp[1]-sp[0]+1)*8 < o.PageCount*7 {
					t.Fatalf("boundary %d: whole GET of %s for frames %d..%d of %d", b, g.key, sp[0], sp[1], o.PageCount)
				}
				whole++
				continue
			}
			if g.off != delta.FrameOffset(4096, sp[0]) || g.n != int64(sp[1]-sp[0]+1)*delta.FrameSize(4096) {
				t.Fatalf("boundary %d: GET %s [%d,+%d), used frames %d..%d", b, g.key, g.off, g.n, sp[0], sp[1])
			}
			ranged++
		}
	}
	// The shrunk boundary uses 2 frames of its third base: ranged.
	if whole == 0 || ranged == 0 {
		t.Fatalf("%d whole and %d ranged GETs: both kinds expected", whole, ranged)
	}
}

// Runs of consecutive pages that span objects (bases on both sides of a
// chunk boundary, a delta run across it, deltas over deltas), objects cut
// into several GETs, reads of two frames: every boundary restores byte
// for byte, on the fs store and on versitygw.
func TestRestoreRunsAcrossObjects(t *testing.T) {
	stores(t, func(t *testing.T, store remote.Store) {
		s := newSynth(t, store, synthOpts{chunkPages: 32, seed: 62, keep: true})
		p := s.publisher(nil)
		s.commit(70, nil, true)
		b := []uint64{publishNow(t, p)}
		for _, pages := range [][]uint32{{30, 31, 32, 33, 34, 35}, {31, 32, 33}, {2, 3, 4, 60, 61, 62, 63, 64, 65, 66}, {33, 64, 65}} {
			s.commit(70, pages, false)
			b = append(b, publishNow(t, p))
		}
		s.commit(50, nil, false)
		s.commit(66, []uint32{51, 52, 53, 66}, false)
		b = append(b, publishNow(t, p))
		split := false
		for _, txid := range b {
			res := restoreSmallReads(t, s, txid, "restore")
			snap, err := s.cat.SnapshotAt(txid)
			must(t, err)
			if int(res.Gets) > len(snap.Objects()) {
				split = true
			}
		}
		if !split {
			t.Fatal("no object was fetched in pieces")
		}
	})
}

// A damaged object fails the restore with an error that names it, and
// leaves no file: a flipped page byte (ErrCorrupt), a delta frame whose
// header names another page (its hash still matches: only the count of
// pages found catches it), a base frame naming another page, an object
// shorter than the catalog says.
func TestRestoreNamesDamagedObject(t *testing.T) {
	store := fsStore(t)
	s, _ := shrunk(t, store)
	ctx := context.Background()
	snap := s.cat.Snapshot()
	// One used frame of a delta and of a base.
	var dObj, bObj *manifest.ObjectRef
	var dFrame, bFrame uint32
	for p := uint32(1); p <= snap.DBPages(); p++ {
		loc, err := snap.Resolve(p)
		must(t, err)
		if loc.Kind != manifest.InObject {
			continue
		}
		if loc.Object.Kind == manifest.ObjectBase && bObj == nil {
			bObj, bFrame = loc.Object, loc.Frame
		} else if loc.Object.Kind != manifest.ObjectBase && dObj == nil {
			dObj, dFrame = loc.Object, loc.Frame
		}
	}
	if dObj == nil || bObj == nil {
		t.Fatal("no delta or no base in use")
	}
	damage := []struct {
		name    string
		obj     *manifest.ObjectRef
		corrupt bool
		change  func(b []byte) []byte
	}{
		{"page byte", dObj, true, func(b []byte) []byte {
			b[delta.FrameOffset(4096, dFrame)+delta.FrameHeaderSize+7] ^= 1
			return b
		}},
		{"delta header names another page", dObj, false, func(b []byte) []byte {
			h := b[delta.FrameOffset(4096, dFrame):]
			binary.LittleEndian.PutUint32(h, binary.LittleEndian.Uint32(h)+1)
			return b
		}},
		{"base header names another page", bObj, true, func(b []byte) []byte {
			h := b[delta.FrameOffset(4096, bFrame):]
			binary.LittleEndian.PutUint32(h, binary.LittleEndian.Uint32(h)+1)
			return b
		}},
		{"short object", bObj, false, func(b []byte) []byte { return b[:len(b)-100] }},
	}
	for _, d := range damage {
		rc, _, err := store.Get(ctx, d.obj.Key, 0, -1)
		must(t, err)
		orig, err := io.ReadAll(rc)
		rc.Close()
		must(t, err)
		bad := d.change(bytes.Clone(orig))
		_, err = store.Put(ctx, d.obj.Key, bytes.NewReader(bad), remote.PutOptions{Size: int64(len(bad))})
		must(t, err)
		path := filepath.Join(t.TempDir(), "r.db")
		_, err = Restore(ctx, RestoreOptions{Store: store, Catalog: s.cat, Path: path})
		switch {
		case err == nil:
			t.Fatalf("%s: restore succeeded", d.name)
		case !strings.Contains(err.Error(), d.obj.Key):
			t.Fatalf("%s: error does not name %s: %v", d.name, d.obj.Key, err)
		case d.corrupt && !errors.Is(err, delta.ErrCorrupt):
			t.Fatalf("%s: not ErrCorrupt: %v", d.name, err)
		}
		if _, serr := os.Stat(path); serr == nil {
			t.Fatalf("%s: a failed restore left %s", d.name, path)
		}
		_, err = store.Put(ctx, d.obj.Key, bytes.NewReader(orig), remote.PutOptions{Size: int64(len(orig))})
		must(t, err)
	}
	got, _ := restoreBytes(t, store, s.cat, 0)
	sameBytes(t, "repaired", got, s.model, 4096)
}

// A body that ends early once (a connection dropped mid-object) is asked
// for again from the first frame not yet written, and the restore is
// right; a body that always ends early fails naming the object. Both for
// a base (phase 1) and for the delta the boundary uses most (phase 2's
// merge).
func TestRestoreRetriesBrokenBody(t *testing.T) {
	s, _ := shrunk(t, fsStore(t))
	ctx := context.Background()
	snap := s.cat.Snapshot()
	used := spans(t, snap)
	base, dlt := "", ""
	for _, o := range snap.Objects() {
		sp, ok := used[o.Key]
		switch {
		case !ok:
		case o.Kind == manifest.ObjectBase && base == "":
			base = o.Key
		case o.Kind != manifest.ObjectBase && (dlt == "" || sp[1]-sp[0] > used[dlt][1]-used[dlt][0]):
			dlt = o.Key
		}
	}
	if base == "" || dlt == "" || used[dlt][1] == used[dlt][0] {
		t.Fatalf("want a base and a delta of several frames in use: %q %q %v", base, dlt, used)
	}
	clean, err := Restore(ctx, RestoreOptions{Store: s.store, Catalog: s.cat, Path: filepath.Join(t.TempDir(), "clean.db"), MaxRead: 2 * 4112})
	must(t, err)
	for _, target := range []struct {
		key  string
		keep int64 // once: past this many bytes, so that the retry starts mid-stream (reads of two frames)
	}{{base, 3*4112 + 500}, {dlt, 4112 + 500}} {
		for _, sticky := range []bool{false, true} {
			fs := fault.New(s.store, fault.Config{})
			keep := target.keep
			if sticky {
				keep = 100 // inside the first frame of every GET
			}
			must(t, fs.Inject(fault.Fault{Kind: fault.TruncateEOF, Op: fault.OpGet, Prefix: target.key, Keep: keep, Sticky: sticky}))
			path := filepath.Join(t.TempDir(), "r.db")
			res, err := Restore(ctx, RestoreOptions{Store: fs, Catalog: s.cat, Path: path, MaxRead: 2 * 4112})
			if sticky {
				if err == nil || !strings.Contains(err.Error(), target.key) {
					t.Fatalf("%s always broken: %v", target.key, err)
				}
				continue
			}
			must(t, err)
			got, _ := os.ReadFile(path)
			sameBytes(t, "after a retry", got, s.model, 4096)
			if want := clean.Gets + 1; res.Gets != want {
				t.Fatalf("%s broken once: %d GETs, want %d (one retry)", target.key, res.Gets, want)
			}
		}
	}
}

// pageWriter writes each page at its place: runs of consecutive pages
// (cut at maxWrite boundaries), gaps, a lone page, pages out of order.
func TestRestorePageWriter(t *testing.T) {
	const ps = 4096
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	must(t, err)
	defer f.Close()
	const n = 80
	want := make([]byte, n*ps)
	w := newPageWriter(f, ps)
	order := []uint32{}
	for p := uint32(3); p <= 45; p++ { // crosses two maxWrite boundaries
		if p != 20 {
			order = append(order, p)
		}
	}
	order = append(order, 70, 20, 60, 61, 62, 1)
	for _, p := range order {
		page := bytes.Repeat([]byte{byte(p)}, ps)
		copy(want[(p-1)*ps:], page)
		must(t, w.add(p, page))
	}
	must(t, w.flush())
	got := make([]byte, n*ps)
	if _, err := f.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	sameBytes(t, "pageWriter", got[:70*ps], want[:70*ps], ps)
}
