// Command bop inspects and restores databases that the bop VFS keeps in an
// object store.
//
// Usage:
//
//	bop <command> [arguments] STORE_URL
//
// The commands are:
//
//	restore     write a plain SQLite file of a database at a boundary
//	status      the head, the newest boundary, publishes, objects and sizes
//	boundaries  list the restorable boundaries (txid, seq, time)
//	verify      fetch every object a boundary reads and check its hashes
//	databases   list the databases in a store
//	version     print the version of bop
//	help        print help for a command
//
// STORE_URL is what vfs.Config.Remote takes: file:///absolute/dir (a local
// directory store; the quickstart's embedded store is
// file://<dir>/app.db-bop/store) or
// s3://bucket/prefix?endpoint=https://host:port&region=r&path_style=true.
//
// A database is named by -tenant (default "default") and -db. Without -db,
// bop lists the tenant's keys and takes the one database it finds; with
// several it names them and asks for -db.
//
// S3 credentials come from the environment: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; without them the AWS
// default credential chain is used (shared config files, and on EC2 the
// instance metadata service). -no-imds, or AWS_EC2_METADATA_DISABLED=true,
// keeps the instance metadata service out of that chain.
//
// Every command only reads the store: a file:// store is opened read-only
// (nothing is created in it, so a read-only mount or a copy of a bucket
// works).
//
// A damaged log (a log record missing or corrupt, or a delta object whose
// directory a record needs missing or corrupt) does not stop the
// commands: the catalog is built from the log up to the first damaged
// record. status, boundaries and verify report the damage and exit 1;
// restore refuses the newest boundary, any txid past the damage and any
// -time, naming the newest boundary before the damage, which
// 'bop restore -txid' still restores. Damage inside objects that building
// the catalog does not read (base objects, page frames) is found by
// verify and by restore, which fails rather than write a wrong page.
//
// A missing or corrupt catalog snapshot (the one head names) is a copy of
// the log: the catalog is built from the whole log instead. status and
// verify report it and exit 1; boundaries and restore print a warning and
// work as usual (unless the rebuild needs an object that is gone, which
// is then reported as a damaged log).
//
// Exit status: 0 on success, 1 when the command fails (including verify
// finding a damaged object, and any command finding a damaged log), 2 for
// a usage error. SIGINT and SIGTERM cancel the command; a restore that is
// cancelled leaves no output file.
package main
