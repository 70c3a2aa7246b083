package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/remote"
)

func init() {
	commands = append(commands, &command{
		name:    "verify",
		args:    "STORE_URL",
		summary: "fetch every object a boundary reads and check its hashes",
		help: `
Verify fetches every object that the newest boundary reads (-txid: that
boundary; -all: every boundary the log retains) and checks all of its bytes
(delta.Verify: header, directory, trailer, every page frame's hash, and the
content hash over the whole object), then checks the object against the
catalog: its id, kind, first page, page count, newest txid, size and
content hash. Log records, the head and the catalog snapshot are verified
as they are read to build the catalog (a damaged snapshot is reported and
the catalog built from the whole log instead).

It prints one line per damaged or missing object (or snapshot, or log
record) and a summary, and exits with status 1 if any failed.

Example:

	bop verify -all file:///tmp/bop-quickstart/app.db-bop/store
`,
		setup: func(fs *flag.FlagSet) func(context.Context, *cmdEnv, []string) error {
			var sf storeFlags
			sf.register(fs, true)
			txid := fs.Uint64("txid", 0, "verify the objects of the boundary at or below this txid (default: the newest)")
			all := fs.Bool("all", false, "verify the objects of every boundary the log retains")
			parallel := fs.Int("parallel", 4, "objects verified at once")
			return func(ctx context.Context, env *cmdEnv, args []string) error {
				url, err := oneURL(args)
				if err != nil {
					return err
				}
				txid, err := txidFlag(fs, *txid)
				if err != nil {
					return err
				}
				if *all && txid != 0 {
					return usagef("give -txid or -all, not both")
				}
				if *parallel < 1 || *parallel > 64 {
					return usagef("-parallel %d: want 1 to 64", *parallel)
				}
				return verify(ctx, env, &sf, url, txid, *all, *parallel)
			}
		},
	})
}

// errVerifyFailed: some object failed; the lines above say which.
var errVerifyFailed = errors.New("verification failed")

func verify(ctx context.Context, env *cmdEnv, sf *storeFlags, url string, txid uint64, all bool, parallel int) error {
	r, err := sf.openRemoteDB(ctx, url, "")
	if err != nil {
		return err
	}
	defer r.close()

	objs := map[uint64]*manifest.ObjectRef{}
	add := func(s *manifest.Snapshot) {
		for _, o := range s.Objects() {
			objs[o.ID] = o
		}
	}
	var what string
	switch {
	case all:
		n := 0
		seen := map[uint64]bool{}
		err := r.publishes(func(p manifest.Publish) error {
			if p.Void || p.Txid == 0 || seen[p.Txid] {
				return nil
			}
			seen[p.Txid] = true
			s, err := r.cat.SnapshotAt(p.Txid)
			if errors.Is(err, manifest.ErrSnapshotTooOld) {
				return nil // out of retention: its objects may be gone
			}
			if err != nil {
				return err
			}
			add(s)
			n++
			return nil
		})
		if err != nil {
			return err
		}
		what = fmt.Sprintf("%d boundaries", n)
	case txid != 0:
		if err := r.checkTxid(txid); err != nil {
			return err
		}
		s, err := r.cat.SnapshotAt(txid)
		if err != nil {
			return err
		}
		if s.Txid() == 0 {
			return fmt.Errorf("%s has no boundary at or below txid %d", r.name(), txid)
		}
		add(s)
		what = fmt.Sprintf("boundary txid %d", s.Txid())
	default:
		s := r.cat.Snapshot()
		add(s)
		what = fmt.Sprintf("the newest boundary, txid %d", s.Txid())
		if r.damage != nil {
			what = fmt.Sprintf("the newest boundary before the damage, txid %d", s.Txid())
		}
	}
	if sd := r.cat.SnapshotDamage(); sd != nil {
		fmt.Fprintf(env.stdout, "FAILED %s: %v\n", r.layout.Snapshot(sd.Seq), sd)
	}
	if r.damage != nil {
		fmt.Fprintf(env.stdout, "FAILED log from seq %d: %v\n", r.damage.Seq, r.damage.Err)
	}

	list := make([]*manifest.ObjectRef, 0, len(objs))
	for _, o := range objs {
		list = append(list, o)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Key < list[j].Key })

	var (
		mu       sync.Mutex
		failed   int
		bytes    int64
		wg       sync.WaitGroup
		work     = make(chan *manifest.ObjectRef)
		firstErr error
	)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range work {
				err := verifyObject(ctx, r.store, o)
				mu.Lock()
				switch {
				case err != nil && ctx.Err() != nil:
					if firstErr == nil {
						firstErr = ctx.Err()
					}
				case err != nil:
					failed++
					fmt.Fprintf(env.stdout, "FAILED %s: %v\n", o.Key, err)
				default:
					bytes += o.Size
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, o := range list {
		select {
		case work <- o:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s: %d objects read by %s: %d verified (%s), %d failed\n",
		r.name(), len(list), what, len(list)-failed, sizeString(bytes), failed)
	if failed > 0 {
		return fmt.Errorf("%w: %d of %d objects of %s are damaged or missing", errVerifyFailed, failed, len(list), r.name())
	}
	if r.damage != nil {
		return fmt.Errorf("%w: %w", errVerifyFailed, r.damaged())
	}
	if err := r.snapshotDamaged(); err != nil {
		return fmt.Errorf("%w: %w", errVerifyFailed, err)
	}
	return nil
}

// verifyObject checks every byte of one object and that it is the object
// the catalog says.
func verifyObject(ctx context.Context, s remote.Store, ref *manifest.ObjectRef) error {
	info, err := s.Head(ctx, ref.Key)
	if err != nil {
		return err
	}
	if info.Size != ref.Size {
		return fmt.Errorf("%d bytes, the catalog says %d", info.Size, ref.Size)
	}
	rd := &streamReaderAt{ctx: ctx, store: s, key: ref.Key}
	defer rd.Close()
	o, err := delta.Open(rd, ref.Size)
	if err != nil {
		return err
	}
	if err := o.Verify(); err != nil {
		return err
	}
	h := o.Header()
	switch {
	case h.ObjectID != ref.ID:
		return fmt.Errorf("object id %d, the catalog says %d", h.ObjectID, ref.ID)
	case h.Kind.String() != ref.Kind:
		return fmt.Errorf("a %s object, the catalog says %s", h.Kind, ref.Kind)
	case h.FirstPgno != ref.FirstPgno || h.PageCount != ref.PageCount:
		return fmt.Errorf("pages %d+%d, the catalog says %d+%d", h.FirstPgno, h.PageCount, ref.FirstPgno, ref.PageCount)
	case h.MaxTxid != ref.MaxTxid:
		return fmt.Errorf("newest txid %d, the catalog says %d", h.MaxTxid, ref.MaxTxid)
	case o.Hash() != ref.Hash:
		return fmt.Errorf("content hash %016x, the catalog says %016x", o.Hash(), ref.Hash)
	}
	return nil
}

// streamReaderAt reads one object through the store. delta.Verify reads
// front to back, so one GET from the first offset to the end serves every
// following read; a read elsewhere (the directory, read first by Open)
// starts a new GET.
type streamReaderAt struct {
	ctx   context.Context
	store remote.Store
	key   string

	mu  sync.Mutex
	rc  io.ReadCloser
	pos int64 // offset of the next byte rc yields
}

func (r *streamReaderAt) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rc != nil && r.pos != off {
		r.rc.Close()
		r.rc = nil
	}
	if r.rc == nil {
		rc, _, err := r.store.Get(r.ctx, r.key, off, -1)
		if err != nil {
			return 0, err
		}
		r.rc, r.pos = rc, off
	}
	n, err := io.ReadFull(r.rc, p)
	r.pos += int64(n)
	if err != nil {
		r.rc.Close()
		r.rc = nil
		if err == io.ErrUnexpectedEOF {
			err = io.EOF
		}
	}
	return n, err
}

func (r *streamReaderAt) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	return nil
}
