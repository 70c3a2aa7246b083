// Package manifest keeps one database's catalog: what the remote log says
// (publishes, page objects, their per-chunk references and directories),
// this node's durable jobs, leases and pins, and the in-memory page maps
// that resolve a page at a boundary without SQL. It also owns the remote
// head, log, catalog snapshots and pins, and the single-writer fencing
// protocol over them.
//
// The log is the truth; the catalog is derived from it. A publish is:
//
//  1. create log/<seq> with If-None-Match (the commit point);
//  2. one SQLite transaction applying exactly that record (Catalog.Apply);
//  3. advance head with If-Match (best effort: a lagging head is normal).
//
// The same Apply serves the local writer, OpenRemote (a cold open from
// the store alone: head, snapshot, log records after it until 404, no
// LIST) and followers (Catalog.Refresh).
//
// Files:
//
//	catalog.go   Catalog: Open (schema migrations, exclusive lock), meta, Tip
//	schema.go    the SQLite schema and its forward migrations
//	sql.go       statement cache, transactions
//	record.go    log records: shape, invariants, encoding
//	envelope.go  integrity envelope (JSON body + xxhash64) for head, records, pins
//	apply.go     Apply: the one way remote state enters the catalog
//	pagemap.go   Snapshot and Resolve: the page map of one boundary
//	build.go     building page maps from rows, copy-on-write updates
//	queries.go   SnapshotAt, planner queries (Chunks, Object, Publishes)
//	jobs.go      durable jobs
//	leases.go    leases and local pins
//	head.go      the remote head
//	pin.go       remote pins
//	follow.go    reading the log: Refresh, directories from objects
//	writer.go    Writer: Probe, Takeover, Publish, Renew, Release (fencing)
//	snapshot.go  remote catalog snapshots and OpenRemote
//
// Invariants (each kept by the code named):
//   - Records apply in seq order, each naming the newest non-void record
//     as its parent; txids never decrease along non-void records
//     (Catalog.applyRecord, Record.checkShape).
//   - A record whose epoch is below the nearest takeover before it (or
//     equal, by another writer) is void: recorded, never applied (isVoid).
//   - Every catalog change is one SQLite transaction (Catalog.tx); the file
//     is WAL with synchronous=FULL and locked exclusively by one process.
//   - A page map is immutable once published; Apply builds the next one
//     copy-on-write per chunk and swaps an atomic pointer (Catalog.advance).
//   - Page p is in chunk (p-1)/chunk_pages; a base object's frame for p is
//     p - firstPgno(chunk), never derived from p alone (Snapshot.Resolve).
//   - A writer creates log/<s+1> only after log/<s> is settled, never
//     overwrites a record, and stops at the first sign of another writer
//     (Writer.createRecord, Writer.settle, ErrFenced).
package manifest
