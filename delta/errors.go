package delta

import "errors"

// Sentinel errors. Functions wrap them with context; callers test with
// errors.Is.
var (
	// ErrCorrupt: the bytes are not a valid object (or frame, or
	// directory) of this format: a hash, magic, length or layout check
	// failed, or the object is truncated. The caller must not use any
	// data from it.
	ErrCorrupt = errors.New("delta: corrupt object")

	// ErrVersion: the object carries a format version this reader does
	// not support (a newer writer made it).
	ErrVersion = errors.New("delta: unsupported format version")

	// ErrPageNotFound: the object holds no frame for the requested page.
	ErrPageNotFound = errors.New("delta: page not in object")

	// ErrMisuse: the caller broke an API rule: an invalid header, page
	// number 0, pages out of order, a page of the wrong length, more or
	// fewer pages than the header declared, use after Close.
	ErrMisuse = errors.New("delta: invalid use")
)
