package checkpoint

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bopstore/bop/delta"
	"github.com/bopstore/bop/manifest"
	"github.com/bopstore/bop/quota"
)

// The orchestrator: every publish is a durable job, a catalog row that
// moves
//
//	planned -> staged -> uploaded -> published -> completed
//	   \__________\_________\______________________-> abandoned
//
// with its plan stored at creation and its progress saved after every
// action, so that a crash at any point leaves the last saved state for
// the next start to resume or abandon (recover, below). created_at and
// started_at are written once by the catalog (StartNewJob). Progress saves
// and the job's end are lazy catalog commits: a power loss may roll the
// row back to an earlier state, which the restart handles as if the crash
// had come earlier (docs/arch/checkpoint.md). The
// catalog enforces the moves (manifest.JobState.CanMoveTo): never back,
// abandoned only before published, completed only after it.
//
// What each state means, and what a restart does with it:
//
//	planned   the plan (object ids included) and the catalog lease are
//	          stored. Nothing is in the store, or (after a power loss that
//	          rolled lazy progress back) objects uploaded under the plan's
//	          keys, which the resumed job uploads again, same bytes.
//	staged    some actions' objects were uploaded (listed in the
//	          progress), the rest are not.
//	uploaded  every object is in the store; the record is not known to be
//	          in the log.
//	published the record is in the log and applied to the catalog: the
//	          publish happened. Only local cleanup is left.
//	completed leases released, spool truncated, staging files removed,
//	          quota returned.
//	abandoned the job will never publish. Its uploaded objects (if any)
//	          are referenced by no record: orphans for GC's orphan sweep,
//	          which only deletes keys no record names.
//
// Resume or abandon (recover, every cycle before new work):
//   - published: always resume (finish the cleanup). It is never
//     abandoned: its record is committed. (One whose plan cannot be
//     read is completed without it: completeUnreadable.)
//   - planned, staged, uploaded: first look for the job's record in the
//     catalog (a crash after the log record was created but before the job
//     row said so: the takeover at restart, or settling an unknown outcome,
//     applies the record from the log). Found: it is published; resume.
//     Not found: the record is not in the log (the takeover walked the log
//     to its end; within one process, an uncertain Publish is settled with
//     Writer.CheckStillWriter first), so the job may resume exactly when
//     its plan still fits: the catalog still ends at the plan's parent
//     boundary (txid and size), and the spool still holds the plan's
//     range. Then it resumes from its phase: uploaded actions are kept,
//     the others are staged again from the spool (same ids, same bytes,
//     so the same keys: an upload that landed before the crash is simply
//     repeated), and the record is created. Otherwise it is abandoned.
//   - A job whose run fails permanently (refused record, lease held by
//     another holder, quota that cannot fit, spool range gone or corrupt,
//     fenced) is abandoned at once, unless its record is in the catalog:
//     then it is published whatever failed after, and is finished (endRun,
//     findRecord). Other failures (I/O, network, cancellation) leave it
//     unfinished for the next cycle.
//   - An unknown outcome is never guessed at: the Writer offers the same
//     record bytes again before writing anything else, so the job's
//     record either lands (found in the catalog) or its seq holds
//     another writer's record (fenced: abandoned).

// JobKind is the catalog job kind of a publish.
const JobKind = "publish"

// LeaseKind is the catalog lease kind a publish job holds over its spool
// txid range (the catalog refuses overlapping leases of one kind held by
// different holders).
const LeaseKind = "spool"

// progress is the job row's progress: the actions uploaded so far (a
// prefix of the plan's actions, in order) and, once published, the
// record's seq.
type progress struct {
	Uploaded []uploadedObject `json:"uploaded,omitempty"`
	Seq      uint64           `json:"seq,omitempty"`
}

type uploadedObject struct {
	Size int64  `json:"size"`
	Hash string `json:"hash"` // content hash, 16 hex digits (the key's hash)
}

func (u uploadedObject) hash() (uint64, error) {
	if len(u.Hash) != 16 {
		return 0, fmt.Errorf("%w: progress hash %q", ErrBadPlan, u.Hash)
	}
	h, err := strconv.ParseUint(u.Hash, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: progress hash %q", ErrBadPlan, u.Hash)
	}
	return h, nil
}

func decodeProgress(b []byte, pl *Plan) (progress, error) {
	var pr progress
	if len(b) == 0 {
		return pr, nil
	}
	if err := json.Unmarshal(b, &pr); err != nil {
		return pr, fmt.Errorf("%w: job %s progress: %v", ErrBadPlan, pl.Job, err)
	}
	if len(pr.Uploaded) > len(pl.Actions) {
		return pr, fmt.Errorf("%w: job %s: %d actions uploaded of %d", ErrBadPlan, pl.Job, len(pr.Uploaded), len(pl.Actions))
	}
	for i, u := range pr.Uploaded {
		if _, err := u.hash(); err != nil {
			return pr, err
		}
		if want := pl.Actions[i].Size(pl.PageSize); u.Size != want {
			return pr, fmt.Errorf("%w: job %s action %d: uploaded %d bytes, the plan says %d", ErrBadPlan, pl.Job, i, u.Size, want)
		}
	}
	return pr, nil
}

func newJobID(pl *Plan) string {
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("publish-%d-%d-%s", pl.From, pl.To, hex.EncodeToString(b[:]))
}

// jobRun is one job being driven by this process.
type jobRun struct {
	p     *Publisher
	id    string
	pl    *Plan
	prog  progress
	state manifest.JobState

	qjob         *quota.Job
	src          pageSource // the page set (deltas) or the image record
	pgnos        []uint32
	spoolRelease func()

	// The directory of the last action's delta, kept in memory for the
	// record, which is built right after it (no file to write, read and
	// remove); lastDirAt is its action index, -1 if none. Other actions'
	// directories wait in files (dirName). Bounded by one object's
	// directory, which staging held in memory anyway.
	lastDir   []byte
	lastDirAt int
	// wroteFiles: this run wrote a directory file, which finish removes.
	wroteFiles bool
	// leased: the catalog lease is known to be held (StartNewJob stored
	// it with the job), so lease need not read the leases back.
	leased bool
}

// release drops the in-memory resources of the run (page set, spool
// lease, quota). Durable state (job row, catalog lease, staging files) is
// handled by finish and abandon.
func (r *jobRun) release() {
	r.closeSource()
	if r.spoolRelease != nil {
		r.spoolRelease()
		r.spoolRelease = nil
	}
	if r.qjob != nil {
		r.qjob.Close()
		r.qjob = nil
	}
}

func (r *jobRun) closeSource() {
	if r.src != nil {
		r.src.Close()
		r.src, r.pgnos = nil, nil
	}
}

// save records the job's state and progress lazily (no fsync:
// manifest.Catalog.SaveProgressLazy). A process crash keeps it; a power
// loss may lose it, and the job then resumes from an earlier saved state,
// which is always safe:
//   - staged (before an upload) and uploaded (after one): the lost
//     progress lists fewer uploaded actions; they are staged again from
//     the spool with the same ids and bytes, so the same keys, and
//     uploaded again (the first upload is simply repeated, as after a
//     crash between an upload and its save).
//   - published (saved with completed, in finish's one commit): the
//     record was applied to the catalog by a durable commit before it, so
//     recovery finds it there (findRecord) and marks the job published
//     again.
//
// The job's creation (StartNewJob) and the record's application are the
// durable commits; every lazy save after one of them is made durable by
// the next.
func (r *jobRun) save(state manifest.JobState, phase string) error {
	b, err := json.Marshal(r.prog)
	if err != nil {
		return err
	}
	if err := r.p.cfg.Catalog.SaveProgressLazy(r.id, state, phase, b); err != nil {
		return fmt.Errorf("checkpoint: job %s: save progress (%s): %w", r.id, state, err)
	}
	r.state = state
	r.p.setJob(r.id, state)
	return nil
}

func (r *jobRun) hook(pt Point, action int, path string) error {
	return r.p.hook(Event{Point: pt, Job: r.id, Action: action, Path: path})
}

// createJob stores a new job for plan pl and starts it, in one durable
// catalog transaction (manifest.Catalog.StartNewJob): the catalog lease
// over the plan's range (a conflict, another holder's lease, fails
// loudly and leaves nothing behind), the object ids (reserved durably
// before anything is uploaded, so an id is never reused for other
// content), and the job row with its plan, started. A crash leaves all of
// it or none of it.
func (p *Publisher) createJob(pl *Plan) (*jobRun, error) {
	cat := p.cfg.Catalog
	id := newJobID(pl)
	_, err := cat.StartNewJob(manifest.NewJob{ID: id, Kind: JobKind, ObjectIDs: len(pl.Actions),
		Lease: &manifest.Lease{Kind: LeaseKind, MinTxid: pl.From, MaxTxid: pl.To},
		Plan: func(first uint64) ([]byte, error) {
			pl.AssignIDs(id, first)
			if err := pl.check(); err != nil {
				return nil, fmt.Errorf("checkpoint: the planner made a bad plan: %w", err)
			}
			return pl.Encode()
		}})
	if err != nil {
		return nil, fmt.Errorf("checkpoint: create job %s (txids %d..%d): %w", id, pl.From, pl.To, err)
	}
	r := &jobRun{p: p, id: pl.Job, pl: pl, state: manifest.JobPlanned, lastDirAt: -1, leased: true}
	p.setJob(r.id, r.state)
	if err := r.hook(AtPlanned, -1, ""); err != nil {
		return r, err
	}
	return r, nil
}

// run drives the job from its current state to completed. The caller
// abandons it on a permanent error and releases it in any case.
func (r *jobRun) run(ctx context.Context) error {
	if r.state != manifest.JobPublished {
		if err := r.lease(); err != nil {
			return err
		}
		if err := r.hook(AtLeased, -1, ""); err != nil {
			return err
		}
		for i := len(r.prog.Uploaded); i < len(r.pl.Actions); i++ {
			if err := r.action(ctx, i); err != nil {
				return err
			}
		}
		// The page set (the largest per-page state) is not needed to
		// publish: drop it before the catalog builds its own (the spool
		// lease still protects the range).
		r.closeSource()
		if r.state != manifest.JobUploaded {
			if err := r.save(manifest.JobUploaded, "uploaded"); err != nil {
				return err
			}
		}
		if err := r.hook(AtAllUploaded, -1, ""); err != nil {
			return err
		}
		if err := r.publish(ctx); err != nil {
			return err
		}
	}
	return r.finish()
}

// lease takes the job's leases over its txid range: the catalog lease
// (durable; another holder's overlapping lease is a conflict naming that
// holder) and the spool lease (truncation waits for it). Either failing
// fails the job loudly; nothing is staged without them.
func (r *jobRun) lease() error {
	if !r.leased {
		if err := r.catalogLease(); err != nil {
			return err
		}
		r.leased = true
	}
	if r.spoolRelease == nil {
		rel, err := r.p.cfg.Spool.Lease(r.pl.From, r.pl.To, "checkpoint job "+r.id)
		if err != nil {
			return permanent(fmt.Errorf("checkpoint: job %s: lease spool txids %d..%d: %w", r.id, r.pl.From, r.pl.To, err))
		}
		r.spoolRelease = rel
	}
	return nil
}

// catalogLease registers the job's catalog lease unless it holds it (a
// resumed job registered it before the crash).
func (r *jobRun) catalogLease() error {
	cat := r.p.cfg.Catalog
	held, err := cat.Leases(LeaseKind)
	if err != nil {
		return fmt.Errorf("checkpoint: job %s: read leases: %w", r.id, err)
	}
	mine := false
	for _, l := range held {
		if l.Holder == r.id {
			mine = true // a resumed job registered it before the crash
		}
	}
	if !mine {
		if _, err := cat.RegisterLease(manifest.Lease{Holder: r.id, Kind: LeaseKind, MinTxid: r.pl.From, MaxTxid: r.pl.To}); err != nil {
			return permanent(fmt.Errorf("checkpoint: job %s: register lease on txids %d..%d: %w", r.id, r.pl.From, r.pl.To, err))
		}
	}
	return nil
}

// pageSet opens the spool page set of the plan's range (once per run)
// and checks that it is the set the plan was made from.
func (r *jobRun) pageSet() error {
	if r.src != nil {
		return nil
	}
	if r.pl.Image {
		img, err := openImage(r.p.cfg.Spool, r.pl.From)
		if err != nil {
			return permanent(fmt.Errorf("checkpoint: job %s: %w", r.id, err))
		}
		if img.hdr.PageSize != r.pl.PageSize || img.hdr.DBPages != r.pl.DBPages || img.hdr.NPages != r.pl.DBPages {
			img.Close()
			return permanent(fmt.Errorf("checkpoint: job %s: image record %d holds %d pages of %d bytes (db %d pages), the plan says %d of %d",
				r.id, r.pl.From, img.hdr.NPages, img.hdr.PageSize, img.hdr.DBPages, r.pl.DBPages, r.pl.PageSize))
		}
		r.src = img
		return nil
	}
	ps, err := r.p.cfg.Spool.Newest(r.pl.From, r.pl.To)
	if err != nil {
		return permanent(fmt.Errorf("checkpoint: job %s: read spool txids %d..%d: %w", r.id, r.pl.From, r.pl.To, err))
	}
	if ps.PageSize != r.pl.PageSize || ps.PageSizeChanged || ps.DBPages != r.pl.DBPages || uint32(ps.Len()) != r.pl.SetPages {
		ps.Close()
		return permanent(fmt.Errorf("checkpoint: job %s: spool txids %d..%d hold %d pages of %d bytes (db %d pages), the plan says %d of %d (db %d)",
			r.id, r.pl.From, r.pl.To, ps.Len(), ps.PageSize, ps.DBPages, r.pl.SetPages, r.pl.PageSize, r.pl.DBPages))
	}
	r.src, r.pgnos = ps, ps.Pgnos()
	return nil
}

// action stages, verifies and uploads action i, under a quota reservation
// of the object's exact size, and saves the progress. Staging space is
// one object at a time: the file is removed once uploaded.
func (r *jobRun) action(ctx context.Context, i int) (err error) {
	p := r.p
	a := &r.pl.Actions[i]
	if err := r.pageSet(); err != nil {
		return err
	}
	if r.qjob == nil {
		if r.qjob, err = p.quotaJob(r.id); err != nil {
			return err
		}
	}
	size := a.Size(r.pl.PageSize)
	res, err := p.reserve(ctx, r.qjob, r.id, i, size)
	if err != nil {
		return err
	}
	path := stagingName(p.cfg.StagingDir, r.id, i)
	st, err := stage(ctx, path, r.pl, a, r.src, r.pgnos)
	if err != nil {
		res.Close()
		return err
	}
	defer func() {
		if errors.Is(err, ErrCrash) {
			return // a dead process cleans up nothing
		}
		st.close()
		os.Remove(path)
		res.Close()
	}()
	// No save here: staging changes nothing recovery reads (the progress
	// lists uploads; planned, staged and uploaded jobs resume alike). The
	// row moves on after the upload.
	r.p.setJob(r.id, manifest.JobStaged)
	if err := r.hook(AtStaged, i, path); err != nil {
		return err
	}
	key, err := p.layout.Object(a.Kind, a.ObjectID, st.sum.Hash)
	if err != nil {
		return permanent(err)
	}
	if err := upload(ctx, p.cfg.Store, key, st); err != nil {
		return err
	}
	if a.Kind == manifest.ObjectDelta {
		// The record carries each delta's directory to the catalog (else
		// it reads it back from the object). It waits on disk, not in
		// memory, while the other actions stage (the last action's, in
		// memory: the record is next); if it is lost (a sweep after a
		// failure, a resumed run), the catalog reads it from the store.
		dir, err := delta.EncodeDirectory(st.sum)
		if err != nil {
			return permanent(err)
		}
		if i == len(r.pl.Actions)-1 {
			r.lastDir, r.lastDirAt = dir, i
		} else {
			r.wroteFiles = true
			if err := os.WriteFile(dirName(path), dir, 0o644); err != nil {
				os.Remove(dirName(path))
			}
		}
	}
	r.prog.Uploaded = append(r.prog.Uploaded, uploadedObject{Size: st.sum.Size, Hash: fmt.Sprintf("%016x", st.sum.Hash)})
	state, phase := manifest.JobStaged, fmt.Sprintf("uploaded action %d of %d", i+1, len(r.pl.Actions))
	if len(r.prog.Uploaded) == len(r.pl.Actions) {
		state, phase = manifest.JobUploaded, "uploaded"
	}
	if err := r.save(state, phase); err != nil {
		return err
	}
	p.addStaged(size)
	return r.hook(AtUploaded, i, "")
}

// record builds the log record of the job from the plan and the progress.
func (r *jobRun) record() (*manifest.Record, error) {
	rec := &manifest.Record{Job: r.id, Txid: r.pl.To, DBPages: r.pl.DBPages}
	for i := range r.pl.Actions {
		a := &r.pl.Actions[i]
		u := r.prog.Uploaded[i]
		h, err := u.hash()
		if err != nil {
			return nil, err
		}
		var dir []byte
		switch {
		case a.Kind != manifest.ObjectDelta:
		case i == r.lastDirAt:
			dir = r.lastDir
		default:
			dir, _ = os.ReadFile(dirName(stagingName(r.p.cfg.StagingDir, r.id, i)))
		}
		o, err := objectAdded(r.p.layout, r.pl, a, u.Size, h, dir)
		if err != nil {
			return nil, err
		}
		rec.Added = append(rec.Added, o)
	}
	return rec, nil
}

// publish creates the job's log record (the commit point) and applies it
// to the catalog (manifest.Writer.Publish does both, then advances head).
// Every transaction in the record is durable in the WAL and the spool:
// the plan never goes above the txid Capture.SyncForPublish confirmed.
func (r *jobRun) publish(ctx context.Context) error {
	p := r.p
	if seq, err := p.findRecord(ctx, r.id, r.pl); err != nil {
		return err
	} else if seq != 0 {
		return r.markPublished(seq)
	}
	cat := p.cfg.Catalog
	if tip := cat.Tip(); tip.Txid != r.pl.PrevTxid || tip.DBPages != r.pl.PrevDBPages {
		return permanent(fmt.Errorf("checkpoint: job %s: the catalog ends at txid %d (%d pages), the plan builds on txid %d (%d pages)",
			r.id, tip.Txid, tip.DBPages, r.pl.PrevTxid, r.pl.PrevDBPages))
	}
	rec, err := r.record()
	if err != nil {
		return permanent(err)
	}
	if err := r.hook(AtPublishing, -1, ""); err != nil {
		return err
	}
	err = p.cfg.Writer.Publish(ctx, rec)
	switch {
	case err == nil:
	case errors.Is(err, manifest.ErrFenced):
		p.setFenced(err)
		return permanent(fmt.Errorf("%w: job %s: %w", ErrFenced, r.id, err))
	case errors.Is(err, manifest.ErrBadRecord):
		return permanent(fmt.Errorf("checkpoint: job %s: record refused: %w", r.id, err))
	default:
		// The outcome may be unknown (the record may be in the log):
		// settle it before this job is looked at again.
		p.markUncertain()
		return fmt.Errorf("checkpoint: job %s: publish txids %d..%d: %w", r.id, r.pl.From, r.pl.To, err)
	}
	if err := r.hook(AtRecordLanded, -1, ""); err != nil {
		return err
	}
	return r.markPublished(rec.Seq)
}

// markPublished records that the job's record (seq) is in the catalog. In
// memory only: the row becomes published and completed in finish's one
// lazy commit (manifest.Catalog.CompletePublishedLazy). A crash before it
// leaves the row in its earlier state, and recovery finds the record in
// the catalog (findRecord), as after losing a lazy published save.
func (r *jobRun) markPublished(seq uint64) error {
	r.prog.Seq = seq
	r.state = manifest.JobPublished
	r.p.setJob(r.id, r.state)
	r.p.notePublished()
	return r.hook(AtPublished, -1, "")
}

// finish does what only a published job may do: release its leases,
// truncate the spool up to the published txid, remove its staging files,
// return its quota, and mark it completed. Every step is idempotent, so a
// job that crashed half-way through finish resumes here.
//
// The catalog lease and the job row are ended last, in one lazy commit
// that also records the published state (manifest.Catalog.
// CompletePublishedLazy): its loss leaves a job whose record is in the
// catalog, which recovery marks published and finishes again.
func (r *jobRun) finish() error {
	p := r.p
	if r.spoolRelease != nil {
		r.spoolRelease()
		r.spoolRelease = nil
	}
	r.closeSource() // its lease covers the range too
	if err := r.hook(AtReleased, -1, ""); err != nil {
		return err
	}
	if err := p.truncate(r.pl.To); err != nil {
		// Not fatal for the job: the publish happened. The next cycle
		// truncates up to the catalog's tip.
		p.logf("checkpoint: job %s: %v", r.id, err)
	}
	if err := r.hook(AtTruncated, -1, ""); err != nil {
		return err
	}
	if r.wroteFiles {
		// Else every staging file of this run was removed by its action
		// (one left by a failed removal goes with the next sweep).
		removeStaging(p.cfg.StagingDir, r.id)
	}
	r.lastDir = nil
	if r.qjob != nil {
		r.qjob.Close()
		r.qjob = nil
	}
	prog, err := json.Marshal(r.prog)
	if err != nil {
		return err
	}
	if err := p.cfg.Catalog.CompletePublishedLazy(r.id, fmt.Sprintf("published seq %d", r.prog.Seq), prog); err != nil {
		return fmt.Errorf("checkpoint: job %s: finish: %w", r.id, err)
	}
	r.state = manifest.JobCompleted
	p.setJob("", "")
	return r.hook(AtCompleted, -1, "")
}

// abandon ends a job that will never publish: its leases are released,
// its staging files removed, its quota returned, and the job row says
// why. Objects it uploaded stay in the store, referenced by no record.
func (p *Publisher) abandon(id string, reason error) error {
	removeStaging(p.cfg.StagingDir, id)
	if q, ok := p.quotaTenant().Job(id); ok {
		q.Close()
	}
	msg := "abandoned"
	if reason != nil {
		msg = reason.Error()
	}
	if err := p.cfg.Catalog.FinishJob(id, manifest.JobAbandoned, msg); err != nil {
		return fmt.Errorf("checkpoint: abandon job %s: %w", id, err)
	}
	p.logf("checkpoint: job %s abandoned: %s", id, msg)
	p.setJob("", "")
	return nil
}

// removeStaging removes the staging files of one job.
func removeStaging(dir, job string) {
	names, _ := os.ReadDir(dir)
	for _, e := range names {
		if strings.HasPrefix(e.Name(), job+".a") {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// findRecord returns the seq of the job's publish record if the catalog
// holds it (after settling an uncertain Publish of this process), else 0.
//
// The catalog is searched even when settling fails: settling may apply
// the job's record and only then fail (our record landed, then the
// writer learned it was fenced, or could not read head). The record in
// the catalog is the commit point, so the job is published whatever
// failed after it; the failure is kept (fenced: the publisher stops;
// else: the next publish settles again), never turned into an abandon.
func (p *Publisher) findRecord(ctx context.Context, job string, pl *Plan) (uint64, error) {
	var settleErr error
	if p.takeUncertain() {
		if err := p.cfg.Writer.CheckStillWriter(ctx); err != nil {
			if errors.Is(err, manifest.ErrFenced) {
				p.setFenced(err)
				settleErr = permanent(fmt.Errorf("%w: %w", ErrFenced, err))
			} else {
				p.markUncertain()
				settleErr = fmt.Errorf("checkpoint: settle the last publish: %w", err)
			}
		}
	}
	seq, err := p.recordInCatalog(job, pl)
	switch {
	case err != nil && settleErr != nil:
		return 0, settleErr
	case err != nil:
		return 0, err
	case seq != 0:
		return seq, nil
	}
	return 0, settleErr
}

// recordInCatalog returns the seq of the job's (non-void) publish record
// in the catalog, else 0. The record can only follow the plan's parent.
func (p *Publisher) recordInCatalog(job string, pl *Plan) (uint64, error) {
	cat := p.cfg.Catalog
	for from := pl.PrevSeq + 1; ; {
		rows, err := cat.Publishes(from, 1024)
		if err != nil {
			return 0, fmt.Errorf("checkpoint: read publishes: %w", err)
		}
		for _, r := range rows {
			if r.Job == job && !r.Void && r.Kind == manifest.KindPublish {
				return r.Seq, nil
			}
		}
		if len(rows) < 1024 {
			return 0, nil
		}
		from = rows[len(rows)-1].Seq + 1
	}
}

// recover resumes or abandons every unfinished publish job (see the rules
// at the top of this file), oldest first. It stops at the first job that
// fails with a transient error: that job is retried by the next cycle.
func (p *Publisher) recover(ctx context.Context) error {
	cat := p.cfg.Catalog
	jobs, err := cat.UnfinishedJobs()
	if err != nil {
		return fmt.Errorf("checkpoint: read unfinished jobs: %w", err)
	}
	live := map[string]bool{}
	for _, j := range jobs {
		if j.Kind == JobKind {
			live[j.ID] = true
		}
	}
	if err := p.sweep(live); err != nil {
		return err
	}
	for _, j := range jobs {
		if j.Kind != JobKind {
			continue
		}
		// Settling may fence the publisher while the job it settled is
		// still finished (its record landed first). From then on only
		// published jobs (local cleanup) go on: nothing is uploaded.
		if err := p.fencedErr(); err != nil && j.State != manifest.JobPublished {
			return err
		}
		if err := p.recoverJob(ctx, j); err != nil {
			return err
		}
	}
	return p.fencedErr()
}

// fencedErr is the publisher's fence as an ErrFenced error, or nil.
func (p *Publisher) fencedErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fenced != nil {
		return fmt.Errorf("%w: %w", ErrFenced, p.fenced)
	}
	return nil
}

// sweep removes what no unfinished job owns: staging files (a resumed job
// stages again, so at the start of a cycle every staging file is stale)
// and catalog leases of finished or unknown jobs.
func (p *Publisher) sweep(live map[string]bool) error {
	names, err := os.ReadDir(p.cfg.StagingDir)
	if err != nil {
		return fmt.Errorf("checkpoint: read staging folder: %w", err)
	}
	for _, e := range names {
		os.Remove(filepath.Join(p.cfg.StagingDir, e.Name()))
	}
	ls, err := p.cfg.Catalog.Leases(LeaseKind)
	if err != nil {
		return fmt.Errorf("checkpoint: read leases: %w", err)
	}
	for _, l := range ls {
		if strings.HasPrefix(l.Holder, JobKind+"-") && !live[l.Holder] {
			if err := p.cfg.Catalog.ReleaseLease(l.ID); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p *Publisher) recoverJob(ctx context.Context, j manifest.Job) error {
	pl, err := DecodePlan(j.Plan)
	if err == nil && pl.Job != j.ID {
		err = fmt.Errorf("%w: job %s holds the plan of job %s", ErrBadPlan, j.ID, pl.Job)
	}
	var pr progress
	if err == nil {
		pr, err = decodeProgress(j.Progress, pl)
	}
	if err != nil {
		if j.State == manifest.JobPublished {
			return p.completeUnreadable(j.ID, err)
		}
		return p.abandon(j.ID, err)
	}
	r := &jobRun{p: p, id: j.ID, pl: pl, prog: pr, state: j.State, lastDirAt: -1}
	defer r.release()
	if j.StartedAt.IsZero() {
		if err := p.cfg.Catalog.StartJob(j.ID); err != nil { // a crash before the first start
			return err
		}
	}
	p.setJob(r.id, r.state)
	if j.State != manifest.JobPublished {
		seq, err := p.findRecord(ctx, j.ID, pl)
		if err != nil {
			if isPermanent(err) {
				return p.endRun(r, err)
			}
			return err
		}
		if seq != 0 {
			if err := r.markPublished(seq); err != nil {
				return err
			}
		} else if why := p.stale(pl); why != "" {
			return p.abandon(j.ID, errorf("job %s cannot resume: %s", j.ID, why))
		}
	}
	p.logf("checkpoint: resuming job %s (%s, txids %d..%d)", j.ID, r.state, pl.From, pl.To)
	return p.endRun(r, r.run(ctx))
}

// stale says why an unpublished plan can no longer be published, or "".
func (p *Publisher) stale(pl *Plan) string {
	tip := p.cfg.Catalog.Tip()
	if tip.Txid != pl.PrevTxid || tip.DBPages != pl.PrevDBPages {
		return fmt.Sprintf("the catalog now ends at txid %d (%d pages), the plan built on txid %d (%d pages)",
			tip.Txid, tip.DBPages, pl.PrevTxid, pl.PrevDBPages)
	}
	if tip.PageSize != pl.PageSize || tip.ChunkPages != pl.ChunkPages {
		return "page size or chunk size differ from the catalog's"
	}
	st := p.cfg.Spool.Status()
	if st.FirstTxid > pl.From || st.ConfirmedTxid < pl.To {
		return fmt.Sprintf("the spool holds txids %d..%d (confirmed to %d), the plan needs %d..%d",
			st.FirstTxid, st.LastTxid, st.ConfirmedTxid, pl.From, pl.To)
	}
	return ""
}

// endRun abandons a job whose run failed permanently; a crash leaves
// everything as it is; a transient failure leaves the job for later.
func (p *Publisher) endRun(r *jobRun, err error) error {
	if err == nil || errors.Is(err, ErrCrash) {
		return err
	}
	if isPermanent(err) && r.state != manifest.JobPublished && r.state != manifest.JobCompleted {
		// A job whose record is in the catalog is published, whatever
		// failed after the commit point: it is finished, never abandoned.
		// (Unsure whether it is there: leave it for the next cycle.)
		seq, ferr := p.recordInCatalog(r.id, r.pl)
		if ferr != nil {
			return errors.Join(err, ferr)
		}
		if seq != 0 {
			if merr := r.markPublished(seq); merr != nil {
				return errors.Join(err, merr)
			}
			return errors.Join(err, r.finish())
		}
		r.release()
		if aerr := p.abandon(r.id, err); aerr != nil {
			return errors.Join(err, aerr)
		}
	}
	return err
}

// completeUnreadable ends a published job whose stored plan or progress
// cannot be read: its record is committed, so it is completed, never
// abandoned. Only its plan-specific cleanup is lost: the cycle truncates
// the spool up to the catalog's tip anyway.
func (p *Publisher) completeUnreadable(id string, reason error) error {
	removeStaging(p.cfg.StagingDir, id)
	if q, ok := p.quotaTenant().Job(id); ok {
		q.Close()
	}
	if err := p.cfg.Catalog.FinishJob(id, manifest.JobCompleted, "published; plan unreadable: "+reason.Error()); err != nil {
		return fmt.Errorf("checkpoint: complete job %s: %w", id, err)
	}
	p.logf("checkpoint: published job %s completed without its plan: %v", id, reason)
	p.setJob("", "")
	return nil
}
