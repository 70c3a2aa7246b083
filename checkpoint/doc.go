// Package checkpoint publishes a database's spooled transactions to the
// object store as durable, resumable jobs, and restores a plain SQLite
// file from the store at any retained boundary.
//
// A publish is one job:
//
//	plan     MakePlan, a pure function of (spool txid range, catalog tip,
//	         policy): delta objects holding the newest version of every page
//	         changed in the range (one object may span chunks), or, for an
//	         adopted database's image record, one base object per chunk. A
//	         job takes at most Policy.MaxJobPages page images of records.
//	         Object ids are allocated durably before anything is uploaded
//	         and stored in the plan, so a resumed job writes the same keys.
//	stage    real page bytes from the spool stream into the delta encoder
//	         and a staging file, under a quota reservation; the staged
//	         object is read back and verified whole.
//	upload   one streaming Put under Layout.Object(kind, id, content hash).
//	publish  manifest.Writer.Publish: the log record (the commit point),
//	         then the catalog transaction, then head.
//	finish   leases released, spool truncated, staging removed, quota
//	         returned, job completed.
//
// Publisher runs jobs in the background (interval, spool size) or on
// request (PublishNow), reports lag (Status), lets commits wait for a
// publish (WaitPublished) or for the lag to shrink (WaitLag), and stops
// for good when another writer fences it. Restore materialises a file at a
// boundary, streaming each object it uses once and verifying every frame.
//
// Files:
//
//	plan.go       the planner: Range, Policy, Plan, Action, MakePlan, plan encoding
//	execute.go    the executor: stage, verify, upload one action
//	job.go        the orchestrator: the job state machine, resume/abandon rules
//	publisher.go  Publisher: cycles, triggers, lag, waiting, takeover, Close
//	restore.go    Restore (restore_plan.go: GETs per object; restore_fetch.go:
//	              verify and write; restore_write_*.go: pwritev; prealloc_*.go)
//	hooks.go      fault-injection points (tests)
//	errors.go     sentinel errors
//
// Invariants (each kept by the code named):
//   - Nothing above the txid Capture.SyncForPublish returned is ever
//     planned, so every transaction in a record is durable in the WAL and
//     the spool before the record exists (Publisher.cycle).
//   - Every object of every plan has its own id, allocated once from the
//     catalog; its key carries its content hash; two objects never share a
//     key (Publisher.createJob, objectAdded).
//   - A staged object holds pages read from the spool and verified against
//     their spool hashes, and is verified whole before upload; the store's
//     hash of the received bytes must equal the staged file's (stage,
//     verifyStaged, upload).
//   - A job's leases (catalog and spool) are held before anything is
//     staged; failing to get one fails the job naming the holder
//     (jobRun.lease).
//   - Leases are released, the spool truncated and quota returned only
//     after the record is in the log and the catalog (jobRun.finish).
//   - A published job is never abandoned; an unpublished job resumes only
//     while its plan still fits the catalog and the spool (recoverJob,
//     stale).
//   - A fenced publisher never publishes again (setFenced, usableLocked).
package checkpoint
