// Package delta defines bop's immutable page-object format, used for both
// base objects (every page of one chunk at a boundary) and delta objects
// (the newest version of each page a publish changed).
//
// An object is a fixed-size header, then one fixed-size frame per page in
// ascending page order, then a page directory, then a trailer:
//
//	header    64 bytes: magic, version, kind, page size, object id,
//	          txid range, first pgno, page count, header hash
//	frame i   16-byte frame header (pgno, length, xxhash64 of the page)
//	          followed by the page, at FrameOffset(pageSize, i)
//	directory one 24-byte entry per frame (pgno, length, offset, hash),
//	          then a hash binding the directory to the header
//	trailer   40 bytes: directory offset and length, the content hash
//	          (xxhash64 of everything before the trailer), a trailer
//	          hash, magic
//
// docs/FORMAT-delta.md gives the exact byte layout.
//
// Every frame in an object has the same size, so a page is located from
// (object, frame index) by arithmetic, and one ranged read of one frame
// fetches and verifies one page (DecodeFrame). The Encoder streams to an
// io.Writer and holds only the directory. Open reads the header and the
// directory with trailer (one read for objects up to 64 KiB, two above),
// after which ReadPage costs exactly one ReadAt. Verify checks a whole
// object with bounded memory.
//
// Nothing in this package trusts its input: every length is checked
// against the object size before anything is allocated, and every mismatch
// is an error wrapping ErrCorrupt (or ErrVersion for a newer format),
// never data and never a panic.
package delta
