package storetest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bopstore/bop/remote"
	"github.com/cespare/xxhash/v2"
)

// memStore is the simplest correct Store: it holds objects in memory. The
// suite must pass on it, and must fail on each of its seeded bugs.
type memStore struct {
	mu   sync.Mutex
	objs map[string]memObj
	gen  int
	bug  string // one of the bugs below, or ""
}

type memObj struct {
	data []byte
	etag string
	mod  time.Time
}

func newMem(bug string) *memStore { return &memStore{objs: map[string]memObj{}, bug: bug} }

func (m *memStore) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	if err := remote.ValidateKey(key); err != nil {
		return remote.PutResult{}, err
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return remote.PutResult{}, fmt.Errorf("mem: both conditions")
	}
	// Failing early is allowed; the decision is the check under the lock
	// below (which the racy bug skips).
	if err := m.check(key, opts); err != nil {
		return remote.PutResult{}, err
	}
	if r == nil {
		r = bytes.NewReader(nil)
	}
	var buf bytes.Buffer
	chunk := make([]byte, 32<<10)
	for {
		if err := ctx.Err(); err != nil && m.bug != "ignore-ctx" {
			return remote.PutResult{}, err
		}
		n, err := r.Read(chunk)
		buf.Write(chunk[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			if m.bug == "keep-partial" {
				break
			}
			return remote.PutResult{}, err
		}
		if m.bug == "drop-tail" && n < len(chunk) && buf.Len() > 0 {
			// Wrongly treats a short read as the end of the body.
			break
		}
	}
	data := buf.Bytes()
	if opts.Size >= 0 && int64(len(data)) != opts.Size && m.bug != "ignore-size" {
		return remote.PutResult{}, fmt.Errorf("mem: body of %d bytes, declared %d", len(data), opts.Size)
	}
	if m.bug == "racy-conditions" {
		// Check-then-write: the others pass the check meanwhile.
		time.Sleep(5 * time.Millisecond)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.bug != "racy-conditions" {
		if err := m.checkLocked(key, opts); err != nil {
			return remote.PutResult{}, err
		}
	}
	for k := range m.objs {
		if strings.HasPrefix(key, k+"/") || strings.HasPrefix(k, key+"/") {
			return remote.PutResult{}, fmt.Errorf("mem: %q and %q cannot both exist", key, k)
		}
	}
	m.gen++
	etag := fmt.Sprint(m.gen)
	if m.bug == "stable-etag" {
		etag = fmt.Sprint(len(data))
	}
	m.objs[key] = memObj{data: bytes.Clone(data), etag: etag, mod: time.Now()}
	return remote.PutResult{ETag: etag, Size: int64(len(data)), XXH64: xxhash.Sum64(data)}, nil
}

func (m *memStore) check(key string, opts remote.PutOptions) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checkLocked(key, opts)
}

func (m *memStore) checkLocked(key string, opts remote.PutOptions) error {
	o, ok := m.objs[key]
	if opts.IfNoneMatch && ok {
		return remote.ErrPrecondition
	}
	if opts.IfMatch != "" && (!ok || o.etag != opts.IfMatch) {
		return remote.ErrPrecondition
	}
	return nil
}

func (m *memStore) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	if err := remote.ValidateKey(key); err != nil {
		return nil, remote.ObjectInfo{}, err
	}
	if off < 0 {
		return nil, remote.ObjectInfo{}, remote.ErrInvalidRange
	}
	if err := ctx.Err(); err != nil {
		return nil, remote.ObjectInfo{}, err
	}
	m.mu.Lock()
	o, ok := m.objs[key]
	m.mu.Unlock()
	if !ok {
		return nil, remote.ObjectInfo{}, remote.ErrNotFound
	}
	size := int64(len(o.data))
	if off > size || (m.bug == "off-eq-size" && off == size && size > 0) {
		return nil, remote.ObjectInfo{}, remote.ErrInvalidRange
	}
	end := size
	if length >= 0 && off+length < end {
		end = off + length
	}
	info := remote.ObjectInfo{Key: key, Size: size, ETag: o.etag, ModTime: o.mod}
	return io.NopCloser(&ctxReader{ctx: ctx, r: bytes.NewReader(o.data[off:end]), bug: m.bug}), info, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
	bug string
}

func (c *ctxReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil && c.bug != "ignore-ctx" {
		return 0, err
	}
	if len(b) > 4096 {
		b = b[:4096]
	}
	return c.r.Read(b)
}

func (m *memStore) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	if err := remote.ValidateKey(key); err != nil {
		return remote.ObjectInfo{}, err
	}
	if err := ctx.Err(); err != nil && m.bug != "ignore-ctx" {
		return remote.ObjectInfo{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return remote.ObjectInfo{}, remote.ErrNotFound
	}
	return remote.ObjectInfo{Key: key, Size: int64(len(o.data)), ETag: o.etag, ModTime: o.mod}, nil
}

func (m *memStore) Delete(ctx context.Context, key string) error {
	if err := remote.ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil && m.bug != "ignore-ctx" {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objs, key)
	return nil
}

func (m *memStore) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	if err := remote.ValidatePrefix(prefix); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil && m.bug != "ignore-ctx" {
		return err
	}
	m.mu.Lock()
	var infos []remote.ObjectInfo
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			infos = append(infos, remote.ObjectInfo{Key: k, Size: int64(len(o.data)), ETag: o.etag, ModTime: o.mod})
		}
	}
	m.mu.Unlock()
	slices.SortFunc(infos, func(a, b remote.ObjectInfo) int {
		if m.bug == "dir-order" {
			// The naive walk order: a folder's keys before its
			// siblings, as if '/' sorted first.
			return strings.Compare(strings.ReplaceAll(a.Key, "/", "\x00"), strings.ReplaceAll(b.Key, "/", "\x00"))
		}
		return strings.Compare(a.Key, b.Key)
	})
	for _, info := range infos {
		if err := fn(info); err != nil {
			return err
		}
	}
	return nil
}

func TestMemStorePasses(t *testing.T) {
	Run(t, func(t *testing.T) remote.Store { return newMem("") }, Options{})
}

func TestMemStorePassesWithThreshold(t *testing.T) {
	Run(t, func(t *testing.T) remote.Store { return newMem("") }, Options{MultipartThreshold: 256 << 10})
}

// seededBugs maps each bug of memStore to the subtest that must catch it.
var seededBugs = map[string]string{
	"racy-conditions": "RaceIfNoneMatch",
	"stable-etag":     "Replace",
	"off-eq-size":     "Ranges",
	"dir-order":       "List",
	"ignore-size":     "SizeMismatch",
	"ignore-ctx":      "CancelPutMidStream",
	"keep-partial":    "BodyError",
	"drop-tail":       "ReaderShapes",
}

// TestSuiteCatchesBugs runs the suite on each seeded bug in a child
// process and checks that the child fails, in the subtest named for it: a
// suite that passes a broken store is itself broken.
func TestSuiteCatchesBugs(t *testing.T) {
	if bug := os.Getenv("STORETEST_BUG"); bug != "" {
		t.Skip("in a child")
	}
	for bug, sub := range seededBugs {
		t.Run(bug, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperBuggy$", "-test.v")
			cmd.Env = append(os.Environ(), "STORETEST_BUG="+bug)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a store with bug %q:\n%s", bug, out)
			}
			if want := "--- FAIL: TestHelperBuggy/" + sub; !strings.Contains(string(out), want) {
				t.Fatalf("bug %q: want a failure in %s; output:\n%s", bug, sub, out)
			}
		})
	}
}

func TestHelperBuggy(t *testing.T) {
	bug := os.Getenv("STORETEST_BUG")
	if bug == "" {
		t.Skip("runs only as a child of TestSuiteCatchesBugs")
	}
	Run(t, func(t *testing.T) remote.Store { return newMem(bug) }, Options{SkipSlow: true})
}

func TestPattern(t *testing.T) {
	whole := patternBytes(5, 100_000)
	part := make([]byte, 777)
	fillPattern(5, 12345, part)
	if !bytes.Equal(part, whole[12345:12345+777]) {
		t.Fatal("fillPattern at an offset differs from the whole stream")
	}
	if bytes.Equal(patternBytes(5, 64), patternBytes(6, 64)) {
		t.Fatal("two seeds give the same stream")
	}
	if err := verifyPattern(bytes.NewReader(whole[10:]), 5, 10, int64(len(whole)-10)); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(whole)
	bad[5000] ^= 1
	if err := verifyPattern(bytes.NewReader(bad), 5, 0, int64(len(bad))); err == nil || !strings.Contains(err.Error(), "5000") {
		t.Fatalf("verifyPattern on a flipped byte: %v", err)
	}
	if err := verifyPattern(bytes.NewReader(whole[:10]), 5, 0, 11); err == nil {
		t.Fatal("verifyPattern accepted a short body")
	}
	if xxhash.Sum64(whole) != patternHash(5, int64(len(whole))) {
		t.Fatal("patternHash differs from the hash of the bytes")
	}
}
