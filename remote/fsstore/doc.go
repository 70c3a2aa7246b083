// Package fsstore is the embedded default remote.Store: objects are files
// in a local directory (URL file:///path). Key "a/b/c" is the file
// <root>/a/b/c, holding exactly the object's bytes, so a store can be read
// with ordinary tools and copied to S3 as is.
//
// On-disk layout (docs/FORMAT-remote.md has the full rules):
//
//	<root>/<key>          one regular file per object
//	<root>/#bop/lock      flock'ed around every change of the key tree;
//	                      its first 8 bytes hold the last timestamp issued
//	<root>/#bop/tmp/put-* objects being written, each flock'ed by its writer
//
// No key can name anything under "#bop": '#' is not a key byte.
//
// Invariants, and the code that keeps them:
//
//   - A key never shows a partial object: a Put writes a temp file,
//     fsyncs it, then renames (or links) it into place and fsyncs the
//     folder (put.go). A crash leaves at most a temp file, which List and
//     Get never see and Sweep removes.
//   - Conditional puts hold across goroutines and processes: every change
//     of the key tree (rename, link, unlink, folder creation and removal)
//     happens under the store lock (lock.go); create-if-absent is link(2),
//     which fails if the name exists.
//   - An ETag is "<mtime ns>-<size>-<inode>", all hex (etag.go). Every Put
//     sets its file's mtime to a stamp issued under the store lock, strictly
//     greater than every stamp issued before on this root, so no two
//     objects ever written to one store share an mtime, and a key never
//     shows one ETag for two contents. Head costs one stat.
//   - Objects are streamed in bounded chunks; ctx is checked between them.
//
// The store needs a local POSIX file system that keeps sub-second mtimes
// and supports hard links and flock; New checks the first two. Several
// processes on one machine may share a root; a network file system may not.
package fsstore
