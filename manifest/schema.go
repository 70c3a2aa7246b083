package manifest

// The catalog schema. PRAGMA user_version holds the schema version; Open
// runs the forward migrations from the file's version to SchemaVersion in
// one transaction, and refuses a file whose version is newer than this
// code (ErrSchemaTooNew) rather than misread it.
//
// Tables marked "local" describe this node only (durable jobs, leases,
// local pins, the change log, object-id allocation) and are emptied in a
// remote catalog snapshot; everything else is derived from the remote log
// and is identical on every node that applied the same records.

// SchemaVersion is the catalog schema this code writes.
const SchemaVersion = 1

// migrations[i] takes a catalog from version i to i+1.
var migrations = []string{
	// 0 -> 1: the initial schema.
	`
CREATE TABLE meta (
	id                 INTEGER PRIMARY KEY CHECK (id = 1),
	format             INTEGER NOT NULL,
	tenant             TEXT    NOT NULL,
	db                 TEXT    NOT NULL,
	page_size          INTEGER NOT NULL,
	chunk_pages        INTEGER NOT NULL,
	tip_seq            INTEGER NOT NULL DEFAULT 0, -- newest applied record, void or not
	last_seq           INTEGER NOT NULL DEFAULT 0, -- newest non-void record
	last_txid          INTEGER NOT NULL DEFAULT 0, -- its txid: the newest boundary
	db_pages           INTEGER NOT NULL DEFAULT 0, -- its db size in pages
	epoch              INTEGER NOT NULL DEFAULT 0, -- its epoch
	writer             TEXT    NOT NULL DEFAULT '', -- its writer
	fence_epoch        INTEGER NOT NULL DEFAULT 0, -- epoch of the nearest takeover record
	history_floor_txid INTEGER NOT NULL DEFAULT 0, -- boundaries below are out of retention
	created_ms         INTEGER NOT NULL,
	-- local:
	next_object_id     INTEGER NOT NULL DEFAULT 1,
	snapshot_seq       INTEGER NOT NULL DEFAULT 0  -- newest remote snapshot made or loaded here
);

-- One row per log record, void ones included (void = 1: skipped).
CREATE TABLE publishes (
	seq         INTEGER PRIMARY KEY,
	kind        TEXT    NOT NULL,
	epoch       INTEGER NOT NULL,
	writer      TEXT    NOT NULL,
	job         TEXT    NOT NULL,
	parent_seq  INTEGER NOT NULL,
	parent_txid INTEGER NOT NULL,
	txid        INTEGER NOT NULL,
	db_pages    INTEGER NOT NULL,
	shrink      INTEGER NOT NULL, -- db_pages below the previous non-void record's
	compaction  INTEGER NOT NULL,
	created_ms  INTEGER NOT NULL,
	log_key     TEXT    NOT NULL,
	log_hash    INTEGER NOT NULL, -- xxhash64 of the record's bytes
	log_size    INTEGER NOT NULL,
	void        INTEGER NOT NULL
);
CREATE INDEX publishes_txid   ON publishes (txid) WHERE void = 0;
CREATE INDEX publishes_shrink ON publishes (seq)  WHERE void = 0 AND shrink = 1;

-- One row per page object, never per page version.
CREATE TABLE objects (
	id          INTEGER PRIMARY KEY,
	kind        TEXT    NOT NULL CHECK (kind IN ('base', 'delta')),
	key         TEXT    NOT NULL UNIQUE,
	size        INTEGER NOT NULL,
	hash        INTEGER NOT NULL,
	first_pgno  INTEGER NOT NULL,
	page_count  INTEGER NOT NULL,
	min_txid    INTEGER NOT NULL,
	max_txid    INTEGER NOT NULL,
	created_seq INTEGER NOT NULL,
	rec_pos     INTEGER NOT NULL, -- position in its record (orders layers of one record)
	retired_seq INTEGER           -- set when its last chunk reference is retired
);

-- References per (object, chunk): a base rewrite retires a spanning delta
-- only for the chunks it folded. A reference is live at seq S when
-- created_seq <= S and (retired_seq IS NULL or retired_seq > S).
CREATE TABLE object_chunks (
	chunk       INTEGER NOT NULL,
	object_id   INTEGER NOT NULL REFERENCES objects (id),
	created_seq INTEGER NOT NULL,
	retired_seq INTEGER,
	PRIMARY KEY (chunk, object_id)
) WITHOUT ROWID;
CREATE INDEX object_chunks_object ON object_chunks (object_id);

-- One row per delta object: its directory in delta's verified encoding
-- (delta.EncodeDirectory), fetched once from the object.
CREATE TABLE directories (
	object_id INTEGER PRIMARY KEY REFERENCES objects (id),
	entries   BLOB NOT NULL
);

-- local: durable checkpoint jobs. created_at and started_at are written
-- once; progress saves touch only state, phase, progress and updated_at.
CREATE TABLE jobs (
	id         TEXT PRIMARY KEY,
	kind       TEXT    NOT NULL,
	state      TEXT    NOT NULL CHECK (state IN ('planned', 'staged', 'uploaded', 'published', 'completed', 'abandoned')),
	phase      TEXT    NOT NULL DEFAULT '',
	progress   BLOB,
	plan       BLOB,
	created_at INTEGER NOT NULL,
	started_at INTEGER,
	updated_at INTEGER NOT NULL,
	last_error TEXT    NOT NULL DEFAULT ''
);

-- local: leases over txid ranges (e.g. spool ranges a job still needs).
CREATE TABLE leases (
	id       INTEGER PRIMARY KEY,
	holder   TEXT    NOT NULL,
	kind     TEXT    NOT NULL,
	min_txid INTEGER NOT NULL,
	max_txid INTEGER NOT NULL,
	expires  INTEGER NOT NULL -- unix ms; 0: never
);

-- local: retention holds of this node (replica connections, restores).
CREATE TABLE local_pins (
	id       TEXT PRIMARY KEY,
	boundary INTEGER NOT NULL,
	owner    TEXT    NOT NULL,
	reason   TEXT    NOT NULL DEFAULT '',
	expires  INTEGER NOT NULL -- unix ms; 0: never
);

-- local: one row per applied change.
CREATE TABLE changes (
	id     INTEGER PRIMARY KEY AUTOINCREMENT,
	at_ms  INTEGER NOT NULL,
	what   TEXT    NOT NULL,
	detail TEXT    NOT NULL
);
`,
}

// localTables are emptied in a remote catalog snapshot.
var localTables = []string{"jobs", "leases", "local_pins", "changes"}
