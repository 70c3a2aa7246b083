package s3store

import (
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// readerAtBody is a body that can be read at any offset: a file, a
// bytes.Reader, an io.SectionReader. Put sends such a body without copying
// it into part buffers: every part (or the single PutObject) is a section
// of it, which the SDK reads, and rewinds for a retry, itself.
type readerAtBody interface {
	io.ReaderAt
	io.Seeker
}

// sizeOf returns the position and the remaining length of a seekable body
// and leaves its position unchanged. ok is false when the body cannot seek
// (a pipe behind an *os.File); an error means the position could not be
// restored, and the body must not be used.
func sizeOf(r readerAtBody) (start, size int64, ok bool, err error) {
	start, err = r.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, 0, false, nil
	}
	end, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, false, nil
	}
	if _, err := r.Seek(start, io.SeekStart); err != nil {
		return 0, 0, false, fmt.Errorf("restore body position: %w", err)
	}
	if end < start {
		return 0, 0, false, nil
	}
	return start, end - start, true, nil
}

// putReaderAt sends size bytes of ra from start. The xxhash64 is computed
// by reading the body once more, in order, while the parts go up: the body
// must not change during the Put (as with any body: what is stored is
// what was read). On success the body's position is at its end, as if it
// had been read.
//
// Memory: a 256 KiB hashing buffer and the SDK's; no part buffers. At
// most Concurrency parts are in flight.
func (s *Store) putReaderAt(ctx context.Context, key, full string, r readerAtBody, start, size int64, opts remote.PutOptions) (remote.PutResult, error) {
	if opts.Size >= 0 && opts.Size != size {
		return remote.PutResult{}, fmt.Errorf("s3store: put %s: body has %d bytes, PutOptions.Size announced %d", key, size, opts.Size)
	}
	var res remote.PutResult
	if size <= s.cfg.MultipartThreshold {
		sum, err := hashSection(ctx, r, start, size)
		if err != nil {
			return res, fmt.Errorf("s3store: put %s: %w", key, err)
		}
		ifNone, ifMatch, o := conditions(opts)
		out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:        aws.String(s.cfg.Bucket),
			Key:           aws.String(full),
			Body:          io.NewSectionReader(r, start, size),
			ContentLength: aws.Int64(size),
			IfNoneMatch:   ifNone,
			IfMatch:       ifMatch,
		})
		if err != nil {
			return res, mapErr(o, "put "+key, err)
		}
		res = remote.PutResult{ETag: aws.ToString(out.ETag), Size: size, XXH64: sum}
	} else {
		parts := (size + s.cfg.PartSize - 1) / s.cfg.PartSize
		if parts > MaxParts {
			return res, fmt.Errorf("s3store: put %s: %d bytes exceed %d parts of %d bytes", key, size, MaxParts, s.cfg.PartSize)
		}
		m, err := s.startMultipart(ctx, key, full)
		if err != nil {
			return res, err
		}
		// Hash in order on the side while the parts go up.
		type hashed struct {
			sum uint64
			err error
		}
		hc := make(chan hashed, 1)
		go func() {
			sum, err := hashSection(m.ctx, r, start, size)
			hc <- hashed{sum, err}
		}()
		slots := make(chan struct{}, s.cfg.Concurrency)
	send:
		for i := range parts {
			select {
			case slots <- struct{}{}:
			case <-m.ctx.Done():
				m.fail(fmt.Errorf("s3store: put %s: %w", key, m.ctx.Err()))
				break send
			}
			off := i * s.cfg.PartSize
			n := min(s.cfg.PartSize, size-off)
			m.send(int32(i+1), io.NewSectionReader(r, start+off, n), n, func() { <-slots })
		}
		h := <-hc
		if h.err != nil {
			m.fail(fmt.Errorf("s3store: put %s: %w", key, h.err))
		}
		etag, err := m.finish(ctx, opts, nil)
		if err != nil {
			return res, err
		}
		res = remote.PutResult{ETag: etag, Size: size, XXH64: h.sum}
	}
	if _, err := r.Seek(start+size, io.SeekStart); err != nil {
		return res, fmt.Errorf("s3store: put %s: stored, but the body cannot seek to its end: %w", key, err)
	}
	return res, nil
}

// hashSection returns the xxhash64 of size bytes of r from off. A body
// that ends early is io.ErrUnexpectedEOF.
func hashSection(ctx context.Context, r io.ReaderAt, off, size int64) (uint64, error) {
	h := xxhash.New()
	buf := make([]byte, min(size, 256<<10))
	for done := int64(0); done < size; {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		p := buf[:min(int64(len(buf)), size-done)]
		n, err := r.ReadAt(p, off+done)
		h.Write(p[:n])
		done += int64(n)
		if n < len(p) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("read body at %d of %d: %w", done, size, err)
		}
	}
	return h.Sum64(), nil
}
