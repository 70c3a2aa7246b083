package manifest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/bopstore/bop/remote"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// LeaseTTL: a writer that published or renewed the head within this
	// long owns the database; a non-forced Takeover fails with
	// ErrOwnedElsewhere. Default 30s. The owner should Renew well within
	// it (e.g. every TTL/3). Clocks of the nodes must agree to within a
	// small fraction of it; safety never depends on clocks, only
	// liveness and politeness do (fencing is by conditional writes).
	LeaseTTL time.Duration
	// SnapshotEvery and SnapshotBytes: MaybeSnapshot uploads a full
	// catalog snapshot once this many records, or this many bytes of log
	// records, were written since the last one. Defaults 1000 and 16 MiB.
	SnapshotEvery int
	SnapshotBytes int64
	// TakeoverAttempts bounds how often a forced Takeover bumps the epoch
	// again after losing a race to another taker. Default 8.
	TakeoverAttempts int
	// Directories overrides the catalog's directory source for records of
	// other writers met during Takeover. Nil: the catalog's, or the store.
	Directories DirectorySource
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// StoreProbed says that ProbeStore succeeded on this store and
	// layout, in this process, just before NewWriter: the writer's first
	// Takeover does not probe again. (The VFS probes while it opens the
	// catalog.) Never set it otherwise: the probe is what refuses a store
	// that cannot fence.
	StoreProbed bool
	// ProbeLeftovers are the probe objects ProbeStore left behind (it
	// returns them): the writer deletes them after its first takeover.
	ProbeLeftovers []string
}

func (o *WriterOptions) defaults() {
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 30 * time.Second
	}
	if o.SnapshotEvery <= 0 {
		o.SnapshotEvery = 1000
	}
	if o.SnapshotBytes <= 0 {
		o.SnapshotBytes = 16 << 20
	}
	if o.TakeoverAttempts <= 0 {
		o.TakeoverAttempts = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Writer is the single writer of one database: it owns the remote log
// while its epoch is the newest, and is fenced (ErrFenced) as soon as
// another writer's record takes a seq it wanted.
//
// Protocol (DESIGN section 6, as built):
//   - Probe: the store must refuse a second create-if-absent of one key
//     and a replace with a wrong ETag, or it cannot fence (ErrUnsafeStore).
//   - Takeover: bump the epoch in head (If-Match; If-None-Match for a new
//     database); walk log/<tip+1>, ... with GETs until 404, applying what
//     is found; create the takeover record at the first free seq
//     (If-None-Match). On 412, read that record: ours (same bytes) means
//     success; another record with an epoch not above ours is applied and
//     the next seq tried; a record with a higher epoch means another taker
//     won: a forced takeover bumps again and restarts the walk (bounded by
//     TakeoverAttempts, then ErrFenced), a non-forced one returns
//     ErrOwnedElsewhere naming the winner.
//   - Publish: create log/<s+1> only after log/<s> succeeded. A 412 is
//     resolved by a GET: our own bytes mean success (a retried Put whose
//     first response was lost); anything else means ErrFenced: stop, never
//     overwrite. An error with unknown outcome (timeout, reset) leaves the
//     record pending: before anything else is written, the same bytes are
//     offered again at the same seq (If-None-Match) until they land or
//     another record is found there. A 404 proves nothing (a store may
//     apply a request after its client gave up), so a seq whose create
//     may still land never gets a second, different record from us.
//   - head is advanced (If-Match) after each record, best effort. A head
//     showing a higher epoch means a takeover is under way: the writer
//     stops (ErrFenced) rather than race it.
//
// A Writer is safe for concurrent use; its operations are serialised.
type Writer struct {
	store  remote.Store
	layout remote.Layout
	cat    *Catalog
	id     string
	opts   WriterOptions

	mu     sync.Mutex
	probed bool
	// probeLeftovers: probe objects left in a database that had no head
	// yet (ProbeStore), deleted once a takeover finds or makes one.
	probeLeftovers []string
	epoch          uint64 // 0: not the writer
	head           Head   // the head as we last wrote it
	headETag       string
	fenced         error
	// pending is a record whose create had an unknown outcome. Invariant:
	// while it is set, nothing else is created at any seq; it is cleared
	// only when its exact bytes are seen at its seq (success) or another
	// record is (fenced), or by a Takeover, whose walk and create at the
	// first free seq decide its seq the same way.
	pending *pendingRecord
	lastSeq uint64 // our newest record known to be in the log
	// holdHead: Publish leaves head as it is (HoldHead).
	holdHead bool
}

type pendingRecord struct {
	rec *Record
	raw []byte
}

// TakeoverInfo is what a successful Takeover returns.
type TakeoverInfo struct {
	Epoch   uint64
	Seq     uint64 // seq of our takeover record
	Txid    uint64 // T_seed: the boundary the writer continues from
	DBPages uint32 // database size at that boundary
	// Foreign counts the records of other writers found after the local
	// catalog's tip. Non-zero means someone published since this node
	// last did: its local image, WAL and spool predate the remote state
	// and must be quarantined and rebuilt, never republished.
	Foreign int
}

// NewWriter binds a writer id to a database. id names this writer in
// records and errors (e.g. "host-1/pid-4242/<random>"): two processes
// must never share one.
func NewWriter(store remote.Store, layout remote.Layout, cat *Catalog, id string, opts WriterOptions) (*Writer, error) {
	if id == "" {
		return nil, fmt.Errorf("manifest: writer id is empty")
	}
	if cat.Layout() != layout {
		return nil, fmt.Errorf("manifest: catalog %s belongs to %s, not %s", cat.Path(), cat.Layout().Root(), layout.Root())
	}
	opts.defaults()
	return &Writer{store: store, layout: layout, cat: cat, id: id, opts: opts, probed: opts.StoreProbed,
		probeLeftovers: slices.Clone(opts.ProbeLeftovers)}, nil
}

// NewWriterID returns a fresh random writer id with a readable prefix.
func NewWriterID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// ID is the writer id.
func (w *Writer) ID() string { return w.id }

// Epoch is the writer's epoch, 0 when it is not the writer.
func (w *Writer) Epoch() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.epoch
}

func (w *Writer) dirs() DirectorySource {
	if w.opts.Directories != nil {
		return w.opts.Directories
	}
	return w.cat.dirSource(w.store)
}

// Probe checks that the store enforces conditional writes: a second
// create-if-absent of one fresh key must fail, and so must a replace with
// an ETag that does not match. A store that lets either through cannot
// fence two writers: ErrUnsafeStore.
func (w *Writer) Probe(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.probeLocked(ctx)
}

func (w *Writer) probeLocked(ctx context.Context) error {
	left, err := ProbeStore(ctx, w.store, w.layout)
	w.probeLeftovers = append(w.probeLeftovers, left...)
	if err != nil {
		return err
	}
	w.probed = true
	return nil
}

// dropProbeLeftoversLocked deletes the probe objects left before the
// database had a head, once it has one (whatever the takeover's outcome:
// one that lost the race or was refused sees head too).
func (w *Writer) dropProbeLeftoversLocked(ctx context.Context) {
	if len(w.probeLeftovers) == 0 {
		return
	}
	cctx, cancel := probeCleanupContext(ctx)
	defer cancel()
	if _, err := w.store.Head(cctx, w.layout.Head()); err != nil {
		return // no head yet (or no answer): a later takeover drops them
	}
	for _, key := range w.probeLeftovers {
		w.store.Delete(cctx, key) // best effort, as every probe cleanup
	}
	w.probeLeftovers = nil
}

// probeCleanupContext bounds a probe object's cleanup, which runs even
// when ctx has ended (it is not the caller's work), by its own deadline.
func probeCleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), probeCleanupTimeout)
}

const probeCleanupTimeout = 10 * time.Second

// ProbeStore is Writer.Probe without a writer: it needs only the store and
// the database's layout (its probe/ folder), so it can run while the
// catalog is being opened (WriterOptions.StoreProbed). It deletes its
// probe object at once only if the database has a head; otherwise it
// returns its key among leftovers, for the writer to delete after its
// takeover (WriterOptions.ProbeLeftovers). Why: deleting the last key of
// a folder makes some servers remove the folder, and its parents while
// they are empty (versitygw's posix backend), so in a database that
// holds nothing yet it removed the database's own folder while another
// writer created head in it; that create failed and left head a phantom
// on the server (a 412 to every create, a 404 to every read), which no
// takeover could get past. Head is never deleted: once it exists, the
// folder never empties.
func ProbeStore(ctx context.Context, store remote.Store, layout remote.Layout) (leftovers []string, err error) {
	for attempt := 0; attempt < 3; attempt++ {
		// A 412 on the first create of a fresh random key is a spurious
		// answer (versitygw gives one while another client creates the
		// probe folder): try another key.
		var left string
		left, err = probeOnce(ctx, store, layout)
		if left != "" {
			leftovers = append(leftovers, left)
		}
		if !errors.Is(err, errProbeFresh) {
			return leftovers, err
		}
	}
	return leftovers, err
}

var errProbeFresh = errors.New("fresh key refused")

func probeOnce(ctx context.Context, store remote.Store, layout remote.Layout) (leftover string, err error) {
	var b [8]byte
	rand.Read(b[:])
	key, err := layout.Probe("p" + hex.EncodeToString(b[:]))
	if err != nil {
		return "", err
	}
	put := func(body string, opts remote.PutOptions) error {
		opts.Size = int64(len(body))
		_, err := store.Put(ctx, key, bytes.NewReader([]byte(body)), opts)
		return err
	}
	defer func() {
		cctx, cancel := probeCleanupContext(ctx)
		defer cancel()
		// A store refused as unsafe gets no head from bop: nothing can
		// race the delete there.
		if !errors.Is(err, ErrUnsafeStore) {
			if _, herr := store.Head(cctx, layout.Head()); herr != nil {
				leftover = key // no head (or no answer): not now (see ProbeStore)
				return
			}
		}
		store.Delete(cctx, key)
	}()
	if err := put("first", remote.PutOptions{IfNoneMatch: true}); err != nil {
		if errors.Is(err, remote.ErrPrecondition) {
			return "", fmt.Errorf("manifest: probe %s: %w: %w", key, errProbeFresh, err)
		}
		return "", fmt.Errorf("manifest: probe %s: first conditional create: %w", key, err)
	}
	switch err := put("second", remote.PutOptions{IfNoneMatch: true}); {
	case err == nil:
		return "", fmt.Errorf("%w: %s: a second If-None-Match create of %s succeeded", ErrUnsafeStore, layout.Root(), key)
	case !errors.Is(err, remote.ErrPrecondition):
		return "", fmt.Errorf("manifest: probe %s: second conditional create: %w", key, err)
	}
	switch err := put("third", remote.PutOptions{IfMatch: `"bop-probe-not-an-etag"`}); {
	case err == nil:
		return "", fmt.Errorf("%w: %s: an If-Match replace of %s with a wrong ETag succeeded", ErrUnsafeStore, layout.Root(), key)
	case !errors.Is(err, remote.ErrPrecondition):
		return "", fmt.Errorf("manifest: probe %s: conditional replace: %w", key, err)
	}
	return "", nil
}

// Takeover makes this writer the database's writer (see Writer for the
// protocol). Without force it fails with ErrOwnedElsewhere while another
// writer holds the lease or wins the race. It returns the boundary the
// writer continues from (T_seed).
func (w *Writer) Takeover(ctx context.Context, force bool) (TakeoverInfo, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer w.dropProbeLeftoversLocked(ctx)
	if !w.probed {
		if err := w.probeLocked(ctx); err != nil {
			return TakeoverInfo{}, err
		}
	}
	// A pending record of the old epoch needs no settling here: it can
	// land only at the seq after the catalog's tip, which the walk below
	// either finds (and applies: an older epoch of ours) or claims with
	// the takeover record (and then it can never land).
	w.epoch, w.fenced, w.pending = 0, nil, nil
	var lastErr error
	for attempt := 0; attempt < w.opts.TakeoverAttempts; attempt++ {
		info, winner, err := w.takeoverOnce(ctx, force)
		if err != nil {
			return TakeoverInfo{}, err
		}
		if winner == nil {
			return info, nil
		}
		lastErr = fmt.Errorf("%w: writer %s took over with epoch %d at seq %d", ErrOwnedElsewhere, winner.Writer, winner.Epoch, winner.Seq)
		if !force {
			return TakeoverInfo{}, lastErr
		}
	}
	w.fenced = fmt.Errorf("%w: lost the takeover race %d times (last: %v)", ErrFenced, w.opts.TakeoverAttempts, lastErr)
	return TakeoverInfo{}, w.fenced
}

// takeoverOnce bumps the epoch once and tries to finish. winner != nil
// means a taker with a higher epoch got there first.
func (w *Writer) takeoverOnce(ctx context.Context, force bool) (TakeoverInfo, *Record, error) {
	head, etag, err := w.bumpEpoch(ctx, force)
	if err != nil {
		return TakeoverInfo{}, nil, err
	}
	epoch := head.Epoch
	if err := w.checkNotDiverged(ctx); err != nil {
		return TakeoverInfo{}, nil, err
	}
	src := w.dirs()
	foreign := 0
	// Walk the log to its end.
	for {
		seq := w.cat.Tip().Seq + 1
		rec, raw, err := getRecord(ctx, w.store, w.layout, seq)
		if errors.Is(err, remote.ErrNotFound) {
			break
		}
		if err != nil {
			return TakeoverInfo{}, nil, err
		}
		if w.beats(rec, epoch) {
			return TakeoverInfo{}, rec, nil
		}
		if err := w.cat.applyFrom(ctx, rec, raw, src); err != nil {
			return TakeoverInfo{}, nil, err
		}
		if rec.Writer != w.id {
			foreign++
		}
	}
	if tip := w.cat.Tip(); tip.FenceEpoch >= epoch {
		// The log already holds a takeover with our epoch or a higher
		// one: the head bump did not give us a fresh epoch (a store whose
		// If-Match is not reliable). Bump again, above the log's epoch.
		rows, err := w.cat.Publishes(tip.LastSeq, 1)
		if err != nil {
			return TakeoverInfo{}, nil, err
		}
		return TakeoverInfo{}, &Record{Seq: rows[0].Seq, Epoch: tip.FenceEpoch, Writer: tip.Writer}, nil
	}
	if tip := w.cat.Tip(); tip.Seq < head.Seq {
		return TakeoverInfo{}, nil, fmt.Errorf("%w: %s: the log ends at seq %d but head says %d (records missing, or the local catalog predates a snapshot: use OpenRemote)",
			ErrBehind, w.layout.Root(), tip.Seq, head.Seq)
	}
	// Create the takeover record at the first free seq.
	for {
		tip := w.cat.Tip()
		rec := &Record{Format: RecordFormat, Seq: tip.Seq + 1, Kind: KindTakeover, Epoch: epoch, Writer: w.id,
			Parent: Parent{Seq: tip.LastSeq, Txid: tip.Txid}, Txid: tip.Txid, DBPages: tip.DBPages,
			PageSize: tip.PageSize, ChunkPages: tip.ChunkPages, CreatedMs: w.opts.Now().UnixMilli()}
		raw, err := EncodeRecord(rec)
		if err != nil {
			return TakeoverInfo{}, nil, err
		}
		if err := w.cat.checkRecord(ctx, rec, raw, src); err != nil {
			return TakeoverInfo{}, nil, err
		}
		other, otherRaw, err := w.createRecord(ctx, rec, raw)
		if err != nil {
			return TakeoverInfo{}, nil, err
		}
		if other != nil {
			if w.beats(other, epoch) {
				return TakeoverInfo{}, other, nil
			}
			if err := w.cat.applyFrom(ctx, other, otherRaw, src); err != nil {
				return TakeoverInfo{}, nil, err
			}
			if other.Writer != w.id { // ours: a create of an earlier epoch that landed late
				foreign++
			}
			continue
		}
		if err := w.cat.applyFrom(ctx, rec, raw, src); err != nil {
			return TakeoverInfo{}, nil, fmt.Errorf("manifest: takeover record %d created but not applied locally: %w", rec.Seq, err)
		}
		w.epoch, w.lastSeq = epoch, rec.Seq
		// Head is not advanced to the takeover record: the bump just
		// wrote it (our epoch, writer id and renewal time, which is what
		// other nodes read it for), and the next record's head names a
		// newer seq anyway. A head lagging the log is normal (readers and
		// takers walk the log from it); a competing taker is met by the
		// next record's create (412), as it would be after this write.
		w.head, w.headETag = *head, etag
		return TakeoverInfo{Epoch: epoch, Seq: rec.Seq, Txid: rec.Txid, DBPages: rec.DBPages, Foreign: foreign}, nil, nil
	}
}

// beats reports whether a record met during our takeover with this
// epoch means another taker won: a higher epoch, or our own epoch in
// another writer's hands. The second cannot happen with a store whose
// If-Match is atomic (epochs come from head bumps); it is checked anyway
// because safety must rest on the log's If-None-Match creates alone
// (versitygw's posix backend was seen returning an object with another
// version's ETag under concurrent writes, which breaks If-Match).
func (w *Writer) beats(rec *Record, epoch uint64) bool {
	return rec.Epoch > epoch || rec.Epoch == epoch && rec.Writer != w.id
}

// The head bump's retry budget: at least bumpMinTries conditional writes
// and at least bumpPatience, backing off at random up to bumpBackoffMax.
// Variables so that tests can shorten them.
var (
	bumpMinTries   = 64
	bumpPatience   = 20 * time.Second
	bumpBackoffMax = 250 * time.Millisecond
)

// bumpEpoch raises the epoch in head by one (creating head for a new
// database) and returns the head as written and its ETag.
func (w *Writer) bumpEpoch(ctx context.Context, force bool) (*Head, string, error) {
	tip := w.cat.Tip()
	// Two takers bumping in lockstep back off at random, growing to
	// bumpBackoffMax. The give-up is by time as well as by count: 64 quick
	// tries (about 2 s) ran out once when two forced takers met on a
	// versitygw loaded by a full race-detector test run.
	start := time.Now()
	var refused error // the last refusal, for the give-up message
	phantom := 0      // consecutive creates refused while head reads as missing
	i := 0
	for ; i < bumpMinTries || time.Since(start) < bumpPatience; i++ {
		if i > 0 {
			backoff := time.Duration(1+mrand.Int64N(int64(min(time.Millisecond<<min(i, 16), bumpBackoffMax)/time.Millisecond))) * time.Millisecond
			if err := sleepCtx(ctx, backoff); err != nil {
				return nil, "", err
			}
		}
		head, etag, err := GetHead(ctx, w.store, w.layout)
		var next Head
		switch {
		case errors.Is(err, remote.ErrNotFound):
			if tip.Seq > 0 {
				return nil, "", fmt.Errorf("manifest: %s has no head but the local catalog holds %d records: wrong store or database?", w.layout.Root(), tip.Seq)
			}
			next = Head{Format: HeadFormat, Epoch: 1, PageSize: tip.PageSize, ChunkPages: tip.ChunkPages}
			etag = ""
		case err != nil:
			return nil, "", err
		default:
			if head.PageSize != tip.PageSize || head.ChunkPages != tip.ChunkPages {
				return nil, "", fmt.Errorf("manifest: %s: head says page size %d, %d pages per chunk; the catalog has %d, %d",
					w.layout.Head(), head.PageSize, head.ChunkPages, tip.PageSize, tip.ChunkPages)
			}
			if !force && head.Writer != w.id && !head.Released {
				if age := w.opts.Now().Sub(head.Renewed()); age < w.opts.LeaseTTL {
					return nil, "", fmt.Errorf("%w: %s is owned by writer %s (epoch %d, renewed %s ago, lease %s)",
						ErrOwnedElsewhere, w.layout.Root(), head.Writer, head.Epoch, age.Round(time.Millisecond), w.opts.LeaseTTL)
				}
			}
			next = *head
			// Above both the head and the newest takeover we know of:
			// the log, not the head, is the authority on epochs.
			next.Epoch = max(head.Epoch, tip.FenceEpoch) + 1
		}
		next.Format = HeadFormat
		next.Writer, next.RenewedMs, next.Released = w.id, w.opts.Now().UnixMilli(), false
		newTag, err := putHead(ctx, w.store, w.layout, &next, etag)
		if err == nil {
			return &next, newTag, nil
		}
		refused = err
		// Did our head land anyway? Unknown outcomes (a lost response),
		// and refusals too: the client retries a request whose response
		// was lost, and the retry of a conditional write that landed is
		// refused by its own first attempt (412).
		got, gotTag, gerr := GetHead(ctx, w.store, w.layout)
		if gerr == nil && got.Epoch == next.Epoch && got.Writer == w.id && got.RenewedMs == next.RenewedMs {
			return got, gotTag, nil
		}
		if errors.Is(err, remote.ErrPrecondition) {
			if etag == "" && errors.Is(gerr, remote.ErrNotFound) {
				phantom++
			} else {
				phantom = 0
			}
			continue // someone else changed head: read it again
		}
		if gerr != nil && !errors.Is(gerr, remote.ErrNotFound) {
			return nil, "", fmt.Errorf("%w (and reading head back: %v)", err, gerr)
		}
		if ctx.Err() != nil {
			return nil, "", err
		}
	}
	if phantom >= bumpMinTries {
		// Nobody else is writing head: it is never there to read.
		return nil, "", fmt.Errorf("manifest: %s: gave up bumping the epoch after %d tries in %s: every create of head is refused (%v) while head reads as missing: "+
			"the server keeps a phantom of the key (versitygw's posix backend with --sidecar does when a create races a delete that empties the folder), which only removing it on the server clears",
			w.layout.Head(), i, time.Since(start).Round(time.Millisecond), refused)
	}
	return nil, "", fmt.Errorf("manifest: %s: head keeps changing, gave up bumping the epoch after %d tries in %s (last: %v)",
		w.layout.Head(), i, time.Since(start).Round(time.Millisecond), refused)
}

// checkNotDiverged compares the catalog's newest record with the remote
// record of the same seq: a local history that differs must be rebuilt,
// never republished.
func (w *Writer) checkNotDiverged(ctx context.Context) error {
	tip := w.cat.Tip()
	if tip.Seq == 0 {
		return nil
	}
	rows, err := w.cat.Publishes(tip.Seq, 1)
	if err != nil {
		return err
	}
	if len(rows) != 1 {
		return corruptf(w.cat.Path(), "no publishes row for tip seq %d", tip.Seq)
	}
	_, raw, err := getRecord(ctx, w.store, w.layout, tip.Seq)
	if errors.Is(err, remote.ErrNotFound) {
		return fmt.Errorf("%w: local catalog has seq %d, the remote log has no %s", ErrDiverged, tip.Seq, w.layout.Log(tip.Seq))
	}
	if err != nil {
		return err
	}
	if h := hashBytes(raw); h != rows[0].LogHash {
		return fmt.Errorf("%w: %s differs from the record the local catalog applied at that seq", ErrDiverged, w.layout.Log(tip.Seq))
	}
	return nil
}

// createRecord creates log/<rec.Seq> with If-None-Match and settles the
// outcome. It returns (nil, nil, nil) when our record is in place, or the
// record another writer put there. A Put that fails without an answer
// (timeout, lost response) is simply retried with the same bytes: if the
// first one landed, the retry gets 412, and the GET that resolves every
// 412 finds our own bytes: success. If the outcome cannot be settled, the
// record is kept as pending, and settle offers the same bytes again
// before anything else is written: every error return below leaves it
// pending, except a fence.
func (w *Writer) createRecord(ctx context.Context, rec *Record, raw []byte) (*Record, []byte, error) {
	key := w.layout.Log(rec.Seq)
	const attempts = 4
	for attempt := 1; ; attempt++ {
		_, putErr := w.store.Put(ctx, key, bytes.NewReader(raw), remote.PutOptions{IfNoneMatch: true, Size: int64(len(raw))})
		if putErr == nil {
			return nil, nil, nil
		}
		conflict := errors.Is(putErr, remote.ErrPrecondition)
		if !conflict && attempt < attempts && ctx.Err() == nil {
			continue
		}
		got, gotRaw, err := getRecord(ctx, w.store, w.layout, rec.Seq)
		switch {
		case err == nil:
			if bytes.Equal(gotRaw, raw) {
				return nil, nil, nil // ours: this Put or an earlier one landed
			}
			if got.Writer == w.id && got.Epoch == rec.Epoch {
				// This writer never offers two records for one seq (see
				// pending), so another process has our id.
				w.fenced = fmt.Errorf("%w: %s holds another record by this writer id and epoch: two processes share writer id %s", ErrFenced, key, w.id)
				w.epoch = 0
				return nil, nil, w.fenced
			}
			return got, gotRaw, nil
		case errors.Is(err, remote.ErrNotFound) && conflict:
			// 412 but nothing there yet: another writer's create of the
			// same key is still in flight (versitygw answers 412 while
			// it writes). Wait for it to appear; if it never does, try
			// the create again.
			// (An earlier attempt of ours that timed out may be that
			// create: until the seq is decided the record stays pending.)
			if attempt >= attempts+8 {
				w.pending = &pendingRecord{rec: rec, raw: raw}
				return nil, nil, fmt.Errorf("manifest: %s: create refused but the key stays missing: %w", key, putErr)
			}
			if err := sleepCtx(ctx, time.Duration(attempt*attempt)*time.Millisecond); err != nil {
				w.pending = &pendingRecord{rec: rec, raw: raw}
				return nil, nil, fmt.Errorf("manifest: create %s: outcome unknown: %w", key, err)
			}
			continue
		default:
			w.pending = &pendingRecord{rec: rec, raw: raw}
			return nil, nil, fmt.Errorf("manifest: create %s: outcome unknown (%w; reading it back: %v)", key, putErr, err)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// settle resolves a record whose create had an unknown outcome and brings
// the catalog up to the log, before anything new is written. The pending
// record is created again, byte for byte, rather than looked up: a GET
// that finds nothing proves nothing, because the first request may still
// be applied later. So the seq is decided by the store, once: our bytes
// (whichever of our requests landed) or another writer's record (fenced).
func (w *Writer) settle(ctx context.Context) error {
	if p := w.pending; p != nil {
		w.pending = nil // createRecord sets it again if still unknown
		other, _, err := w.createRecord(ctx, p.rec, p.raw)
		switch {
		case err != nil:
			return fmt.Errorf("manifest: settle %s: %w", w.layout.Log(p.rec.Seq), err)
		case other != nil:
			return w.fence(other)
		}
		w.lastSeq = max(w.lastSeq, p.rec.Seq)
		if w.cat.Tip().Seq < p.rec.Seq {
			if err := w.cat.applyFrom(ctx, p.rec, p.raw, w.dirs()); err != nil {
				return fmt.Errorf("manifest: %s was published but the local catalog did not apply it (it catches up from the log): %v", w.layout.Log(p.rec.Seq), err)
			}
		}
		w.advanceHead(ctx, p.rec)
		if w.fenced != nil {
			return w.fenced
		}
		if p.rec.Kind == KindRelease {
			w.epoch = 0 // a Release that failed has happened after all
		}
	}
	// A record of ours that the catalog failed to apply is applied from
	// the log before anything new is written.
	src := w.dirs()
	for seq := w.cat.Tip().Seq + 1; seq <= w.lastSeq; seq++ {
		rec, raw, err := getRecord(ctx, w.store, w.layout, seq)
		if err != nil {
			return fmt.Errorf("manifest: catch up the catalog: %w", err)
		}
		if err := w.cat.applyFrom(ctx, rec, raw, src); err != nil {
			return fmt.Errorf("manifest: catch up the catalog: %w", err)
		}
	}
	return nil
}

func (w *Writer) fence(other *Record) error {
	w.fenced = fmt.Errorf("%w: %s holds a %s record by writer %s (epoch %d); this writer %s had epoch %d",
		ErrFenced, w.layout.Log(other.Seq), other.Kind, other.Writer, other.Epoch, w.id, w.epoch)
	w.epoch = 0
	return w.fenced
}

// Publish appends rec to the log and applies it. The writer fills in
// Format, Seq, Kind (publish), Epoch, Writer, Parent, PageSize,
// ChunkPages and CreatedMs; the caller sets Txid, DBPages, Job, Added,
// Retired and Compaction. Order: the record is checked against the
// catalog (a bad one — e.g. a boundary going backwards — writes nothing),
// log/<seq> is created (the commit point), the catalog applies it, head is
// advanced. ErrFenced: another writer owns the log; nothing was written.
func (w *Writer) Publish(ctx context.Context, rec *Record) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fenced != nil {
		return w.fenced
	}
	if w.epoch == 0 {
		return ErrNotWriter
	}
	if err := w.settle(ctx); err != nil {
		return err
	}
	if err := w.writable(); err != nil {
		return err
	}
	tip := w.cat.Tip()
	if tip.FenceEpoch != w.epoch || tip.Epoch != w.epoch {
		return fmt.Errorf("manifest: catalog epoch %d/%d is not the writer's epoch %d: catalog changed under the writer", tip.Epoch, tip.FenceEpoch, w.epoch)
	}
	if rec.Kind == "" {
		rec.Kind = KindPublish
	}
	if rec.Kind != KindPublish {
		return fmt.Errorf("%w: Publish of a %s record", ErrBadRecord, rec.Kind)
	}
	rec.Format, rec.Seq, rec.Epoch, rec.Writer = RecordFormat, tip.Seq+1, w.epoch, w.id
	rec.Parent = Parent{Seq: tip.LastSeq, Txid: tip.Txid}
	rec.PageSize, rec.ChunkPages, rec.CreatedMs = tip.PageSize, tip.ChunkPages, w.opts.Now().UnixMilli()
	return w.appendLocked(ctx, rec)
}

// appendLocked checks, creates, applies and announces one record.
func (w *Writer) appendLocked(ctx context.Context, rec *Record) error {
	raw, err := EncodeRecord(rec)
	if err != nil {
		return err
	}
	src := w.dirs()
	if err := w.cat.checkRecord(ctx, rec, raw, src); err != nil {
		return err
	}
	other, _, err := w.createRecord(ctx, rec, raw)
	if err != nil {
		return err
	}
	if other != nil {
		return w.fence(other)
	}
	w.lastSeq = rec.Seq
	if err := w.cat.applyFrom(ctx, rec, raw, src); err != nil {
		// Committed remotely; the catalog catches up from the log before
		// the writer's next write (settle) or at the next Takeover. The
		// cause is not wrapped: after the commit point no error may read
		// as a refused record (ErrBadRecord) or a fence.
		return fmt.Errorf("manifest: %s was published but the local catalog did not apply it (it catches up from the log): %v", w.layout.Log(rec.Seq), err)
	}
	if rec.Kind != KindPublish || !w.holdHead {
		w.advanceHead(ctx, rec)
	}
	return nil
}

// HoldHead(true) makes Publish leave head as it is until HoldHead(false):
// a publisher about to Release (at Close) saves a head write, since the
// release record's head names the newer seq anyway. Safe because head is
// only a hint for where the log ends (a lagging head is normal: readers
// and takers walk the log from it); fencing rests on the log's
// conditional creates. Takeover, Release and Renew still write head.
func (w *Writer) HoldHead(hold bool) {
	w.mu.Lock()
	w.holdHead = hold
	w.mu.Unlock()
}

// advanceHead records rec's seq in head (If-Match), best effort: a lagging
// head is normal. A head with a higher epoch means someone is taking over:
// the writer stops.
func (w *Writer) advanceHead(ctx context.Context, rec *Record) {
	next := w.head
	next.Seq, next.Txid = rec.Seq, rec.Txid
	next.RenewedMs = w.opts.Now().UnixMilli()
	next.Released = rec.Kind == KindRelease
	w.putOwnHead(ctx, next)
}

// putOwnHead replaces head with next if head is still ours.
func (w *Writer) putOwnHead(ctx context.Context, next Head) error {
	for i := 0; i < 3; i++ {
		tag, err := putHead(ctx, w.store, w.layout, &next, w.headETag)
		if err == nil {
			w.head, w.headETag = next, tag
			return nil
		}
		got, gotTag, gerr := GetHead(ctx, w.store, w.layout)
		if gerr != nil {
			return fmt.Errorf("%w (reading head back: %v)", err, gerr)
		}
		if got.Epoch != w.epoch || got.Writer != w.id {
			if got.Epoch > w.epoch {
				w.fenced = fmt.Errorf("%w: head shows epoch %d by writer %s (ours %d): a takeover is under way",
					ErrFenced, got.Epoch, got.Writer, w.epoch)
				w.epoch = 0
				return w.fenced
			}
			return fmt.Errorf("manifest: head names epoch %d writer %s, not ours: %w", got.Epoch, got.Writer, err)
		}
		// Still ours (e.g. an earlier Put of ours landed with its
		// response lost): keep what is newer and retry on its ETag.
		if got.Seq > next.Seq {
			next.Seq, next.Txid = got.Seq, got.Txid
		}
		if next.Snapshot == nil || (got.Snapshot != nil && got.Snapshot.Seq > next.Snapshot.Seq) {
			next.Snapshot = got.Snapshot
		}
		w.headETag = gotTag
	}
	return fmt.Errorf("manifest: %s keeps changing", w.layout.Head())
}

// Renew tells other nodes the writer is alive (head's renewed time). Call
// it well within LeaseTTL when idle. ErrFenced if a takeover is under way.
func (w *Writer) Renew(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fenced != nil {
		return w.fenced
	}
	if w.epoch == 0 {
		return ErrNotWriter
	}
	next := w.head
	next.RenewedMs = w.opts.Now().UnixMilli()
	return w.putOwnHead(ctx, next)
}

// Renewed is when this writer last wrote its head (takeover, publish,
// renewal), by WriterOptions.Now, or the zero time while it is not the
// writer. A publisher started right after a takeover uses it to not renew
// a lease that was just written.
func (w *Writer) Renewed() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epoch == 0 || w.head.RenewedMs == 0 {
		return time.Time{}
	}
	return time.UnixMilli(w.head.RenewedMs)
}

// Release hands the database off (planned, at Close): it writes a release
// record and marks head released, so the next writer need not wait for
// the lease to expire. The Writer is no longer the writer afterwards.
func (w *Writer) Release(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fenced != nil {
		return w.fenced
	}
	if w.epoch == 0 {
		return ErrNotWriter
	}
	if err := w.settle(ctx); err != nil {
		return err
	}
	if w.fenced != nil {
		return w.fenced
	}
	if w.epoch == 0 {
		return nil // settle found our earlier release record in the log
	}
	tip := w.cat.Tip()
	rec := &Record{Format: RecordFormat, Seq: tip.Seq + 1, Kind: KindRelease, Epoch: w.epoch, Writer: w.id,
		Parent: Parent{Seq: tip.LastSeq, Txid: tip.Txid}, Txid: tip.Txid, DBPages: tip.DBPages,
		PageSize: tip.PageSize, ChunkPages: tip.ChunkPages, CreatedMs: w.opts.Now().UnixMilli()}
	if err := w.appendLocked(ctx, rec); err != nil {
		return err
	}
	w.epoch = 0
	return nil
}

// CheckStillWriter verifies, against the store, that no other writer has
// written since this writer's last record (log/<tip+1> is absent) and that
// no takeover has begun (head's epoch is not above ours). GC calls it
// before each delete batch.
func (w *Writer) CheckStillWriter(ctx context.Context) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writable(); err != nil {
		return err
	}
	if err := w.settle(ctx); err != nil {
		return err
	}
	if err := w.writable(); err != nil {
		return err
	}
	next := w.cat.Tip().Seq + 1
	other, _, err := getRecord(ctx, w.store, w.layout, next)
	switch {
	case err == nil:
		return w.fence(other)
	case !errors.Is(err, remote.ErrNotFound):
		return err
	}
	head, _, err := GetHead(ctx, w.store, w.layout)
	if err != nil {
		return err
	}
	if head.Epoch > w.epoch {
		w.fenced = fmt.Errorf("%w: head shows epoch %d by writer %s (ours %d): a takeover is under way", ErrFenced, head.Epoch, head.Writer, w.epoch)
		w.epoch = 0
		return w.fenced
	}
	return nil
}
