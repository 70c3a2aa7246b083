package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/quota"
	"github.com/bopstore/bop/remote"
	"github.com/bopstore/bop/wal"
)

// Syncer makes the spooled transactions durable for publishing:
// *wal.Capture. SyncForPublish fsyncs the WAL, then the spool, and returns
// the highest txid durable in both; nothing above it is published.
type Syncer interface {
	SyncForPublish() (uint64, error)
}

// Defaults.
const (
	DefaultInterval   = time.Second
	DefaultSpoolBytes = 64 << 20
	DefaultQuotaWait  = 30 * time.Second
	DefaultRenewEvery = 10 * time.Second
)

// Config configures a Publisher. Store, Catalog, Writer, Spool, Capture
// and StagingDir are required.
type Config struct {
	Store   remote.Store
	Catalog *manifest.Catalog
	// Writer publishes the records. If it has not taken over (Epoch 0),
	// the publisher takes over before its first publish (ForceTakeover
	// is passed on) and asks OnTakeover whether to go on.
	Writer  *manifest.Writer
	Spool   *wal.Spool
	Capture Syncer
	// StagingDir holds staging files (one object at a time). Every file
	// in it belongs to the publisher: stale ones are removed.
	StagingDir string

	// Quota is the tenant whose budget staging files count against (one
	// quota job per durable job). Nil: an unlimited tenant of its own.
	Quota *quota.Tenant
	// QuotaWait is how long an action waits for staging quota before its
	// job fails for now (it resumes at the next cycle; commits go on
	// locally meanwhile). Default 30s. A request that can never fit fails
	// at once.
	QuotaWait time.Duration

	// Interval: publish at least this often when there is something to
	// publish (default 1s). SpoolBytes: publish early once the spool
	// holds this many bytes (default 64 MiB; negative: never early).
	Interval   time.Duration
	SpoolBytes int64
	// RenewEvery: when idle, renew the writer's lease in head this often
	// (default 10s, well within manifest's default 30s lease).
	RenewEvery time.Duration

	Policy        Policy
	ForceTakeover bool
	// OnTakeover, if set, is called after the publisher took the writer
	// role; an error stops the publisher (Status().Halted). Without it, a
	// takeover that found publishes by other writers stops it with
	// ErrDiverged: the local spool predates them.
	OnTakeover func(TakeoverResult) error

	// OnFenced, if set, is called once when the publisher learns that
	// another writer took over (Status().Fenced): the VFS fails commits
	// from then on. It must not block or call back into the Publisher.
	OnFenced func(error)

	// NoLoop: no background loop; publishing happens only in PublishNow,
	// WaitPublished and Close (tests, tools).
	NoLoop bool
	// Hook is called at every job Point (tests: fault injection).
	Hook Hook
	// Logf receives a line for unusual events. Nil: silent.
	Logf func(format string, args ...any)
}

// TakeoverResult is what OnTakeover sees.
type TakeoverResult struct {
	manifest.TakeoverInfo
	// ForeignPublishes counts the publish records the takeover found after
	// the local catalog's tip that this catalog's own unfinished jobs do
	// not explain (a publish of this node that crashed after creating its
	// record is not foreign). Non-zero: another writer published since
	// this node last did; its image and spool must be rebuilt, never
	// republished.
	ForeignPublishes int
}

// Status is a snapshot of the publisher's state.
type Status struct {
	PublishedTxid uint64 // the newest boundary in the catalog
	PublishedSeq  uint64
	SpoolTxid     uint64 // the newest spooled transaction
	ConfirmedTxid uint64 // the newest one durable for publishing
	SpoolBytes    int64
	LagTxns       uint64        // SpoolTxid - PublishedTxid
	Lag           time.Duration // age of the oldest unpublished transaction (as first observed)
	LastPublish   time.Time
	LastError     error // of the last cycle; nil after a good one
	Fenced        bool  // another writer took over: publishing stopped for good
	Halted        error // publishing stopped for good for another reason
	Job           string
	JobState      manifest.JobState
	Publishes     uint64 // records this publisher created
	StagedBytes   uint64 // bytes staged and uploaded by this publisher
	Running       bool   // a cycle is in progress
}

// Publisher publishes one database's spooled transactions to the store
// as durable jobs, in the background (interval, spool size) or on
// request (PublishNow). Its cycles never hold a lock that commits take,
// except briefly inside Capture.SyncForPublish, so commits never wait for
// a publish unless the caller chooses to (WaitPublished, WaitLag).
type Publisher struct {
	cfg    Config
	layout remote.Layout
	pool   *quota.Pool // own pool when cfg.Quota is nil
	tenant *quota.Tenant

	runMu sync.Mutex // one cycle at a time
	// clean (under runMu): recover ran and every job since completed, so
	// no publish job is unfinished and the staging folder holds nothing
	// stale: the next cycle need not recover.
	clean bool

	notified atomic.Uint64 // the newest txid Notify saw (Notify's fast path)

	mu            sync.Mutex
	changed       chan struct{} // closed and replaced at every state change
	published     uint64
	publishedSeq  uint64
	lastPublish   time.Time
	lastHead      time.Time
	lastErr       error
	fenced        error
	halted        error
	dead          error // a simulated crash
	closing       bool
	closed        bool
	running       bool
	job           string
	jobState      manifest.JobState
	uncertain     bool
	tookOver      bool
	cyclesStarted uint64
	cycleDone     uint64 // number of the last finished cycle
	cycleErr      error  // its error
	samples       []lagSample
	publishes     uint64
	stagedBytes   uint64

	ctx    context.Context
	cancel context.CancelFunc
	kickCh chan struct{}
	done   chan struct{}
}

type lagSample struct {
	txid uint64
	at   time.Time
}

// New checks cfg, creates the staging folder and starts the background
// loop (unless cfg.NoLoop). The first cycle takes the writer role if
// needed and resumes or abandons unfinished jobs.
func New(cfg Config) (*Publisher, error) {
	switch {
	case cfg.Store == nil, cfg.Catalog == nil, cfg.Writer == nil, cfg.Spool == nil, cfg.Capture == nil:
		return nil, errorf("Config needs Store, Catalog, Writer, Spool and Capture")
	case cfg.StagingDir == "":
		return nil, errorf("Config.StagingDir is required")
	case cfg.Interval < 0 || cfg.QuotaWait < 0 || cfg.RenewEvery < 0:
		return nil, errorf("negative duration in Config")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.SpoolBytes == 0 {
		cfg.SpoolBytes = DefaultSpoolBytes
	}
	if cfg.QuotaWait == 0 {
		cfg.QuotaWait = DefaultQuotaWait
	}
	if cfg.RenewEvery == 0 {
		cfg.RenewEvery = DefaultRenewEvery
	}
	if err := os.MkdirAll(cfg.StagingDir, 0o755); err != nil {
		return nil, errorf("create staging folder: %w", err)
	}
	p := &Publisher{cfg: cfg, layout: cfg.Catalog.Layout(), changed: make(chan struct{}), kickCh: make(chan struct{}, 1),
		done: make(chan struct{})}
	if cfg.Quota != nil {
		p.tenant = cfg.Quota
	} else {
		p.pool = quota.NewPool(0)
		p.tenant, _ = p.pool.NewTenant(p.layout.Tenant, 0)
	}
	tip := cfg.Catalog.Tip()
	p.published, p.publishedSeq = tip.Txid, tip.LastSeq
	// A Writer that took over before New (the VFS does at open) counts as
	// this publisher's takeover: losing the role later never leads to a
	// second, silent takeover.
	p.tookOver = cfg.Writer.Epoch() != 0
	if at := cfg.Writer.Renewed(); p.tookOver && !at.IsZero() {
		// The lease in head was written then (by the takeover): no
		// renewal is due before RenewEvery from it. A clock that
		// disagrees with ours is ignored.
		if since := time.Since(at); since >= 0 && since < cfg.RenewEvery {
			p.lastHead = at
		}
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	if cfg.NoLoop {
		close(p.done)
	} else {
		go p.loop()
	}
	return p, nil
}

func (p *Publisher) logf(format string, args ...any) {
	if p.cfg.Logf != nil {
		p.cfg.Logf(format, args...)
	}
}

// broadcastLocked wakes every waiter.
func (p *Publisher) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Kick asks for a cycle now if anything is unpublished, without waiting
// for it: the VFS kicks when SQLite's last connection starts closing, so
// that the final publish's staging overlaps SQLite's final checkpoint
// (Close waits for the cycle).
func (p *Publisher) Kick() { p.kick() }

func (p *Publisher) kick() {
	select {
	case p.kickCh <- struct{}{}:
	default:
	}
}

// usableLocked is the error that stops every cycle, or nil.
func (p *Publisher) usableLocked() error {
	switch {
	case p.dead != nil:
		return p.dead
	case p.fenced != nil:
		return fmt.Errorf("%w: %w", ErrFenced, p.fenced)
	case p.halted != nil:
		return p.halted
	case p.closed:
		return ErrClosed
	}
	return nil
}

func (p *Publisher) setFenced(err error) {
	p.mu.Lock()
	first := p.fenced == nil
	if first {
		p.fenced = err
		p.logf("checkpoint: fenced, publishing stops: %v", err)
		p.broadcastLocked()
	}
	p.mu.Unlock()
	if first && p.cfg.OnFenced != nil {
		p.cfg.OnFenced(err)
	}
}

func (p *Publisher) halt(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.halted == nil {
		p.halted = err
		p.logf("checkpoint: publishing stops: %v", err)
		p.broadcastLocked()
	}
	return err
}

func (p *Publisher) markUncertain() {
	p.mu.Lock()
	p.uncertain = true
	p.mu.Unlock()
}

func (p *Publisher) takeUncertain() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	u := p.uncertain
	p.uncertain = false
	return u
}

func (p *Publisher) setJob(id string, st manifest.JobState) {
	p.mu.Lock()
	p.job, p.jobState = id, st
	p.mu.Unlock()
}

func (p *Publisher) addStaged(n int64) {
	p.mu.Lock()
	p.stagedBytes += uint64(n)
	p.mu.Unlock()
}

// notePublished records the catalog's new tip after a record landed.
func (p *Publisher) notePublished() {
	tip := p.cfg.Catalog.Tip()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.published, p.publishedSeq = tip.Txid, tip.LastSeq
	p.lastPublish, p.lastHead = now, now
	p.publishes++
	p.dropSamplesLocked()
	p.broadcastLocked()
}

// hook calls the test hook; ErrCrash kills the publisher.
func (p *Publisher) hook(ev Event) error {
	if p.cfg.Hook == nil {
		return nil
	}
	err := p.cfg.Hook(ev)
	if errors.Is(err, ErrCrash) {
		p.mu.Lock()
		if p.dead == nil {
			p.dead = fmt.Errorf("%w at %s of job %s", ErrCrash, ev.Point, ev.Job)
			p.broadcastLocked()
		}
		p.mu.Unlock()
		p.cancel()
	}
	return err
}

// quotaTenant is the tenant staging counts against.
func (p *Publisher) quotaTenant() *quota.Tenant { return p.tenant }

func (p *Publisher) quotaJob(id string) (*quota.Job, error) {
	if j, ok := p.tenant.Job(id); ok {
		return j, nil
	}
	j, err := p.tenant.NewJob(id, 0)
	if err != nil {
		return nil, errorf("job %s: quota: %w", id, err)
	}
	return j, nil
}

// reserve holds size bytes of staging space for action i, waiting up to
// QuotaWait. A request that can never fit is permanent; a timeout leaves
// the job for the next cycle. Either way commits go on locally.
func (p *Publisher) reserve(ctx context.Context, qj *quota.Job, job string, i int, size int64) (*quota.Reservation, error) {
	wctx, cancel := context.WithTimeout(ctx, p.cfg.QuotaWait)
	defer cancel()
	res, err := qj.ReserveWait(wctx, uint64(size))
	if err == nil {
		return res, nil
	}
	var ex *quota.ExhaustedError
	if errors.As(err, &ex) && ex.Never {
		return nil, permanent(fmt.Errorf("checkpoint: job %s action %d: staging needs %d bytes, more than the quota can ever give: %w",
			job, i, size, err))
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("checkpoint: job %s action %d: waited %v for %d bytes of staging quota (commits continue locally; publishing resumes when space frees up): %w",
		job, i, p.cfg.QuotaWait, size, err)
}

// truncate drops spool records up to upto (at most the confirmed txid).
// A lease held by someone else (an iterator) makes it wait for a later
// cycle.
func (p *Publisher) truncate(upto uint64) error {
	sp := p.cfg.Spool
	st := sp.Status()
	upto = min(upto, st.ConfirmedTxid, st.LastTxid)
	if upto < st.FirstTxid {
		return nil
	}
	if err := sp.Truncate(upto); err != nil {
		return errorf("truncate the spool to txid %d: %w", upto, err)
	}
	return nil
}

// ensureWriter takes the writer role if the Writer does not hold it.
func (p *Publisher) ensureWriter(ctx context.Context) error {
	w := p.cfg.Writer
	if w.Epoch() != 0 {
		return nil
	}
	p.mu.Lock()
	took := p.tookOver
	p.mu.Unlock()
	if took {
		return errorf("the writer lost its role (released): %w", manifest.ErrNotWriter)
	}
	cat := p.cfg.Catalog
	res, err := TakeOver(ctx, cat, w, p.cfg.ForceTakeover)
	if err != nil {
		if errors.Is(err, manifest.ErrFenced) {
			p.setFenced(err)
		}
		return err
	}
	now := time.Now()
	p.mu.Lock()
	p.tookOver, p.lastHead = true, now
	p.mu.Unlock()
	if p.cfg.OnTakeover != nil {
		if err := p.cfg.OnTakeover(res); err != nil {
			return p.halt(errorf("after takeover: %w", err))
		}
	} else if res.ForeignPublishes > 0 {
		return p.halt(fmt.Errorf("%w: the takeover found %d publishes by other writers after this node's catalog: the local spool predates them",
			ErrDiverged, res.ForeignPublishes))
	}
	tip := cat.Tip()
	if st := p.cfg.Spool.Status(); tip.Txid > st.LastTxid {
		return p.halt(fmt.Errorf("%w: the remote log ends at txid %d, the local spool at %d", ErrDiverged, tip.Txid, st.LastTxid))
	}
	p.notePublishedTip()
	return nil
}

// TakeOver takes the writer role for w (manifest.Writer.Takeover, probe
// first) and counts the publishes it found that are not this node's: the
// records after the catalog's tip written by another writer id that this
// catalog's unfinished jobs do not explain (a publish of this node that
// crashed after creating its record is not foreign). The Publisher calls
// it before its first publish when its Writer has not taken over; the VFS
// calls it at open, before the Publisher exists, to decide whether the
// local state must be quarantined (ForeignPublishes > 0).
func TakeOver(ctx context.Context, cat *manifest.Catalog, w *manifest.Writer, force bool) (TakeoverResult, error) {
	prev := cat.Tip().Seq
	jobs, err := cat.UnfinishedJobs()
	if err != nil {
		return TakeoverResult{}, err
	}
	mine := map[string]bool{}
	for _, j := range jobs {
		mine[j.ID] = true
	}
	info, err := w.Takeover(ctx, force)
	if err != nil {
		return TakeoverResult{}, errorf("take the writer role: %w", err)
	}
	res := TakeoverResult{TakeoverInfo: info}
	if info.Seq <= prev+1 {
		// Our takeover record is the only new one: nothing to count (and
		// no query to prepare, at every open).
		return res, nil
	}
	rows, err := cat.Publishes(prev+1, int(info.Seq-prev))
	if err != nil {
		return TakeoverResult{}, err
	}
	for _, r := range rows {
		if r.Kind == manifest.KindPublish && !r.Void && r.Writer != w.ID() && !mine[r.Job] {
			res.ForeignPublishes++
		}
	}
	return res, nil
}

// notePublishedTip refreshes the published boundary from the catalog
// without counting a publish.
func (p *Publisher) notePublishedTip() {
	tip := p.cfg.Catalog.Tip()
	p.mu.Lock()
	defer p.mu.Unlock()
	if tip.Txid != p.published || tip.LastSeq != p.publishedSeq {
		p.published, p.publishedSeq = tip.Txid, tip.LastSeq
		p.dropSamplesLocked()
		p.broadcastLocked()
	}
}

// scan reads the headers of the spool range after the catalog's tip up to
// confirmed and cuts it where the planner needs: an image record is
// published alone, and a job's records hold at most Policy.MaxJobPages
// page images (bounding the page set's memory; one record is never
// split). It returns the range and, for deltas, its page set (the caller
// closes it).
func (p *Publisher) scan(tip manifest.Tip, confirmed uint64) (Range, *wal.PageSet, error) {
	sp := p.cfg.Spool
	from := tip.Txid + 1
	st := sp.Status()
	if st.FirstTxid > from {
		return Range{}, nil, p.halt(fmt.Errorf("%w: the remote log ends at txid %d but the spool starts at %d: txids %d..%d were never published",
			ErrDiverged, tip.Txid, st.FirstTxid, from, st.FirstTxid-1))
	}
	r := Range{From: from, To: confirmed, PageSize: tip.PageSize}
	maxPages := uint64(p.cfg.Policy.maxJobPages())
	var pages uint64
	first := true
	for rec, err := range sp.Records(from, confirmed) {
		if err != nil {
			return Range{}, nil, errorf("read spool headers %d..%d: %w", from, confirmed, err)
		}
		if rec.PageSize != tip.PageSize {
			return Range{}, nil, p.halt(errorf("txid %d has page size %d, the database's published page size is %d: bop cannot publish a page size change",
				rec.Txid, rec.PageSize, tip.PageSize))
		}
		if !first && (rec.Kind == wal.KindImage || pages+uint64(rec.NPages) > maxPages) {
			r.To = rec.Txid - 1 // the image goes alone, next; or the job is full
			break
		}
		if rec.Kind == wal.KindImage {
			if rec.NPages != rec.DBPages {
				return Range{}, nil, p.halt(errorf("image record %d holds %d pages of a %d-page database", rec.Txid, rec.NPages, rec.DBPages))
			}
			r.Image, r.To, r.DBPages, r.MinDBPages = true, rec.Txid, rec.DBPages, rec.DBPages
			break
		}
		if first || rec.DBPages < r.MinDBPages {
			r.MinDBPages = rec.DBPages
		}
		r.DBPages = rec.DBPages
		pages += uint64(rec.NPages)
		first = false
	}
	if r.Image {
		// Every page 1..N, each once (the spool checks pgnos are distinct
		// and within the size): streamed from the record, no index.
		r.Pgnos = make([]uint32, r.DBPages)
		for i := range r.Pgnos {
			r.Pgnos[i] = uint32(i + 1)
		}
		return r, nil, nil
	}
	ps, err := sp.Newest(r.From, r.To)
	if err != nil {
		return Range{}, nil, errorf("read spool txids %d..%d: %w", r.From, r.To, err)
	}
	if ps.PageSize != tip.PageSize || ps.PageSizeChanged || ps.DBPages != r.DBPages {
		ps.Close()
		return Range{}, nil, errorf("spool txids %d..%d: page set of %d-byte pages (changed %v), %d pages; headers said %d pages",
			r.From, r.To, ps.PageSize, ps.PageSizeChanged, ps.DBPages, r.DBPages)
	}
	r.Pgnos = ps.Pgnos()
	return r, ps, nil
}

// cycle is one round of publishing: take the writer role if needed,
// resume or abandon unfinished jobs, then (if publish) publish everything
// confirmed. It returns the published boundary.
//
// Recovery is skipped while p.clean: it looks for jobs this publisher
// left unfinished, and there are none when every job since the last
// recovery completed (a job that fails clears clean first).
func (p *Publisher) cycle(ctx context.Context, publish bool) (uint64, error) {
	cat := p.cfg.Catalog
	if err := p.ensureWriter(ctx); err != nil {
		return 0, err
	}
	if !p.clean {
		if err := p.recover(ctx); err != nil {
			return 0, err
		}
		p.clean = true
	}
	if err := p.truncate(cat.Tip().Txid); err != nil {
		p.logf("%v", err)
	}
	if !publish {
		if err := p.renew(ctx); err != nil {
			return 0, err
		}
		return cat.Tip().Txid, nil
	}
	confirmed, err := p.cfg.Capture.SyncForPublish()
	if err != nil {
		return 0, errorf("sync for publish: %w", err)
	}
	published := false
	for {
		tip := cat.Tip()
		if confirmed <= tip.Txid {
			break
		}
		rng, ps, err := p.scan(tip, confirmed)
		if err != nil {
			return 0, err
		}
		pl, err := MakePlan(rng, tip, p.cfg.Policy)
		if err != nil {
			if ps != nil {
				ps.Close()
			}
			return 0, p.halt(err)
		}
		p.clean = false // until the job completes
		r, err := p.createJob(pl)
		if r == nil {
			if ps != nil {
				ps.Close()
			}
			return 0, err
		}
		if ps != nil {
			r.src, r.pgnos = ps, rng.Pgnos
		}
		if err == nil {
			err = r.run(ctx)
		}
		err = p.endRun(r, err)
		r.release()
		if err != nil {
			return 0, err
		}
		p.clean = r.state == manifest.JobCompleted
		published = true
	}
	if published {
		if _, err := p.cfg.Writer.MaybeSnapshot(ctx); err != nil {
			if errors.Is(err, manifest.ErrFenced) {
				p.setFenced(err)
			}
			p.logf("checkpoint: catalog snapshot: %v", err)
		}
	} else if err := p.renew(ctx); err != nil {
		return 0, err
	}
	return cat.Tip().Txid, nil
}

// renew keeps the writer's lease in head fresh while nothing is published.
func (p *Publisher) renew(ctx context.Context) error {
	p.mu.Lock()
	due := time.Since(p.lastHead) >= p.cfg.RenewEvery
	p.mu.Unlock()
	if !due {
		return nil
	}
	if err := p.cfg.Writer.Renew(ctx); err != nil {
		if errors.Is(err, manifest.ErrFenced) {
			p.setFenced(err)
			return fmt.Errorf("%w: %w", ErrFenced, err)
		}
		return errorf("renew the writer lease: %w", err)
	}
	p.mu.Lock()
	p.lastHead = time.Now()
	p.mu.Unlock()
	return nil
}

// runCycle runs one cycle with the bookkeeping waiters rely on. The
// caller holds runMu.
func (p *Publisher) runCycle(ctx context.Context, closing, publish bool) (uint64, error) {
	p.mu.Lock()
	err := p.usableLocked()
	if err == nil && p.closing && !closing {
		err = ErrClosed
	}
	if err != nil {
		pub := p.published
		p.mu.Unlock()
		return pub, err
	}
	p.cyclesStarted++
	n := p.cyclesStarted
	p.running = true
	p.mu.Unlock()

	txid, err := p.cycle(ctx, publish)

	p.mu.Lock()
	defer p.mu.Unlock()
	p.running = false
	p.cycleDone, p.cycleErr, p.lastErr = n, err, err
	if err == nil {
		p.published = max(p.published, txid)
	}
	if p.dead != nil {
		err = p.dead
	}
	p.broadcastLocked()
	return p.published, err
}

// PublishNow publishes every transaction confirmed now and waits for it
// (PRAGMA bop_checkpoint, the API). It returns the published boundary.
func (p *Publisher) PublishNow(ctx context.Context) (uint64, error) {
	p.runMu.Lock()
	defer p.runMu.Unlock()
	return p.runCycle(ctx, false, true)
}

// loop is the background publisher: it runs a cycle every Interval when
// there is something to publish, at once when kicked (WaitPublished,
// WaitLag) or when the spool holds SpoolBytes. After a failed cycle it
// waits min(Interval, 1s) before trying again, kicked or not, so an
// unreachable store is not hammered while waiters still hear back soon.
//
// The first cycle runs at once but only recovers (resumes or abandons
// unfinished jobs, renews the lease if due): transactions already in the
// spool are published an Interval later, like any others, unless a kick
// or the spool's size asks for them sooner. (A database opened, written
// and closed within an Interval is then published once, at Close.)
func (p *Publisher) loop() {
	defer close(p.done)
	poll := min(max(p.cfg.Interval/4, 10*time.Millisecond), 250*time.Millisecond)
	t := time.NewTimer(0) // the first cycle at once: resume unfinished jobs
	defer t.Stop()
	var last time.Time
	failed := false
	kicked := false // a kick not yet served (it outlives a failure backoff)
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.kickCh:
			kicked = true
		case <-t.C:
		}
		st := p.observe()
		p.mu.Lock()
		published := p.published
		stop := p.usableLocked() != nil || p.closing
		p.mu.Unlock()
		if stop {
			return
		}
		since := time.Since(last)
		first := last.IsZero()
		asked := kicked || p.cfg.SpoolBytes > 0 && st.Bytes >= p.cfg.SpoolBytes
		due := first ||
			st.LastTxid > published && (since >= p.cfg.Interval || asked) ||
			since >= p.cfg.RenewEvery
		if failed && since < min(p.cfg.Interval, time.Second) {
			due = false
		}
		if due {
			p.runMu.Lock()
			_, err := p.runCycle(p.ctx, false, !first || asked)
			p.runMu.Unlock()
			last, failed, kicked = time.Now(), err != nil, false
			if err != nil && !errors.Is(err, context.Canceled) {
				p.logf("checkpoint: publish: %v", err)
			}
		}
		t.Reset(poll)
	}
}

// FinalTxid is an optional interface of Config.Capture: the txid of the
// newest final transaction, which may be newer than the spool's last
// record when capture coalesces transactions (wal.CaptureOptions.Coalesce)
// and holds a group back until SyncForPublish appends it.
type FinalTxid interface {
	LastFinal() uint64
}

// observe samples the tip (the newest final transaction) for the lag
// clock and returns the spool status with LastTxid raised to that tip, so
// that a group capture holds back counts as unpublished: it makes a cycle
// due, and the cycle's SyncForPublish appends it.
func (p *Publisher) observe() wal.SpoolStatus {
	st := p.cfg.Spool.Status()
	if f, ok := p.cfg.Capture.(FinalTxid); ok {
		st.LastTxid = max(st.LastTxid, f.LastFinal())
	}
	p.Notify(st.LastTxid)
	return st
}

// Notify tells the publisher that txid was committed now. It is optional:
// the publisher samples the spool itself, but the VFS calling it at each
// commit makes the lag clock exact.
//
// A txid seen before returns at once, without the clock or the lock: with
// coalescing every commit of a group reports the group's txid, and only
// the first one's time counts (the lag is the age of the oldest
// unpublished commit).
func (p *Publisher) Notify(txid uint64) {
	if txid <= p.notified.Load() {
		return
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := p.notified.Load(); txid > n {
		p.notified.Store(txid) // under mu: only grows
	}
	if txid <= p.published {
		return
	}
	if n := len(p.samples); n > 0 && p.samples[n-1].txid >= txid {
		return
	}
	if len(p.samples) >= maxLagSamples {
		// Bounded, amortized O(1) per commit: halve the samples after the
		// oldest, merging each pair into one with the later txid and the
		// earlier time. The lag of a transaction in a merged pair can
		// only be overstated (by at most the time between the pair).
		k := 1
		for i := 1; i < len(p.samples); i += 2 {
			m := p.samples[i]
			if i+1 < len(p.samples) {
				m.txid = p.samples[i+1].txid
			}
			p.samples[k] = m
			k++
		}
		p.samples = p.samples[:k]
	}
	p.samples = append(p.samples, lagSample{txid: txid, at: now})
}

// maxLagSamples bounds the lag clock's memory (16 bytes a sample).
const maxLagSamples = 4096

func (p *Publisher) dropSamplesLocked() {
	i := 0
	for i < len(p.samples) && p.samples[i].txid <= p.published {
		i++
	}
	if i > 0 {
		p.samples = append(p.samples[:0], p.samples[i:]...)
	}
}

// Lag is the age of the oldest unpublished transaction as the lag clock
// knows it (Notify), without sampling the spool: cheap enough for every
// commit (the VFS's MaxLag check).
func (p *Publisher) Lag() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropSamplesLocked()
	if len(p.samples) == 0 {
		return 0
	}
	// time.Since reads only the monotonic clock (time.Now reads the wall
	// clock too): this runs at every commit.
	return time.Since(p.samples[0].at)
}

// lagLocked is the age of the oldest unpublished transaction.
func (p *Publisher) lagLocked(now time.Time) time.Duration {
	p.dropSamplesLocked()
	if len(p.samples) == 0 {
		return 0
	}
	return now.Sub(p.samples[0].at)
}

// Status returns the publisher's state.
func (p *Publisher) Status() Status {
	st := p.observe()
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	s := Status{PublishedTxid: p.published, PublishedSeq: p.publishedSeq, SpoolTxid: st.LastTxid,
		ConfirmedTxid: st.ConfirmedTxid, SpoolBytes: st.Bytes, Lag: p.lagLocked(now), LastPublish: p.lastPublish,
		LastError: p.lastErr, Fenced: p.fenced != nil, Halted: p.halted, Job: p.job, JobState: p.jobState,
		Publishes: p.publishes, StagedBytes: p.stagedBytes, Running: p.running}
	if p.dead != nil {
		s.Halted = p.dead
	}
	if st.LastTxid > p.published {
		s.LagTxns = st.LastTxid - p.published
	}
	return s
}

// Published returns the newest published boundary and the error of the
// last cycle (nil if it succeeded).
func (p *Publisher) Published() (uint64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.usableLocked(); err != nil && !p.closed {
		return p.published, err
	}
	return p.published, p.lastErr
}

// WaitPublished blocks until txid is published (the VFS's sync
// durability: call it after the commit; concurrent commits share one
// publish). It fails if a publish attempt that started after the call
// fails (the transaction stays committed locally and will still be
// published: its outcome remotely is unknown to the caller), if the
// publisher is fenced, halted or closed, or when ctx ends.
func (p *Publisher) WaitPublished(ctx context.Context, txid uint64) error {
	p.mu.Lock()
	begin := p.cyclesStarted
	p.mu.Unlock()
	for {
		p.mu.Lock()
		pub, ch := p.published, p.changed
		err := p.usableLocked()
		if err == nil && p.closing {
			err = ErrClosed
		}
		failed := p.cycleDone > begin && p.cycleErr != nil
		cerr := p.cycleErr
		p.mu.Unlock()
		switch {
		case pub >= txid:
			return nil
		case err != nil:
			return fmt.Errorf("checkpoint: txid %d not published: %w", txid, err)
		case failed:
			return fmt.Errorf("checkpoint: txid %d not published (it stays committed locally and will be published later): %w", txid, cerr)
		}
		if p.cfg.NoLoop {
			pub, err := p.PublishNow(ctx)
			if err != nil {
				return fmt.Errorf("checkpoint: txid %d not published (it stays committed locally and will be published later): %w", txid, err)
			}
			if pub < txid {
				// Everything confirmed is published: txid is not (yet) a
				// final transaction in the spool.
				return fmt.Errorf("checkpoint: txid %d is not confirmed in the spool (published up to %d)", txid, pub)
			}
			return nil
		}
		// Kick only for a spooled transaction: a cycle cannot publish one
		// that is not in the spool yet (the interval catches it later),
		// and kicking for it would spin.
		if txid <= p.observe().LastTxid {
			p.kick()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("checkpoint: waiting for txid %d to be published: %w", txid, ctx.Err())
		case <-ch:
		}
	}
}

// WaitLag blocks while the oldest unpublished transaction is older than
// max, publishing at once (the VFS's max_lag backpressure on commits).
func (p *Publisher) WaitLag(ctx context.Context, max time.Duration) error {
	for {
		st := p.observe()
		p.mu.Lock()
		lag := p.lagLocked(time.Now())
		pub, ch := p.published, p.changed
		err := p.usableLocked()
		p.mu.Unlock()
		if lag <= max || st.LastTxid <= pub {
			return nil
		}
		if err != nil {
			return fmt.Errorf("checkpoint: publishing is %v behind (max %v): %w", lag.Round(time.Millisecond), max, err)
		}
		if p.cfg.NoLoop {
			_, err := p.PublishNow(ctx) // publishes everything confirmed
			return err
		}
		p.kick()
		t := time.NewTimer(max / 4)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("checkpoint: waiting for the publish lag to drop below %v: %w", max, ctx.Err())
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// Close stops the background loop, publishes what it can within ctx,
// writes a release record (a planned handoff: the next writer need not
// wait for the lease), and returns the error of that final publish. It
// does not close the store, catalog, spool or capture.
func (p *Publisher) Close(ctx context.Context) error {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closing = true
	p.broadcastLocked()
	p.mu.Unlock()
	// A cycle of the loop under way is let finish, not cancelled: it does
	// what the final cycle would do, while one cut short leaves its job
	// unfinished for the final cycle to recover (stage and upload its
	// objects again). The kick wakes an idle loop, which sees closing and
	// returns; ctx bounds the wait.
	p.kick()
	select {
	case <-p.done:
	case <-ctx.Done():
	}
	p.cancel()
	<-p.done

	p.runMu.Lock()
	defer p.runMu.Unlock()
	var errs []error
	p.mu.Lock()
	usable := p.usableLocked() == nil
	p.mu.Unlock()
	if usable {
		// The release record right after the final publish advances head
		// past both: the publish leaves it (Writer.HoldHead). If the
		// cycle or the release fails, head lags, which is normal.
		p.cfg.Writer.HoldHead(true)
		defer p.cfg.Writer.HoldHead(false)
		if _, err := p.runCycle(ctx, true, true); err != nil {
			errs = append(errs, err)
		} else if p.cfg.Writer.Epoch() != 0 {
			if err := p.cfg.Writer.Release(ctx); err != nil {
				if errors.Is(err, manifest.ErrFenced) {
					p.setFenced(err)
				}
				errs = append(errs, errorf("release the writer role: %w", err))
			}
		}
	}
	p.mu.Lock()
	p.closed = true
	p.broadcastLocked()
	p.mu.Unlock()
	if p.pool != nil {
		p.tenant.Close()
	}
	return errors.Join(errs...)
}

// QuotaUsed is the staging bytes reserved now (zero between jobs).
func (p *Publisher) QuotaUsed() uint64 { return p.tenant.Used() }
