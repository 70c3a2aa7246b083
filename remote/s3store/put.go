package s3store

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cespare/xxhash/v2"

	"github.com/bopstore/bop/remote"
)

// smallBody is how much of a body of unknown size Put reads into a private
// buffer before it takes a part buffer: log records, heads and pins never
// touch the part pool.
const smallBody = 64 << 10

// Put streams r to key (see remote.Store).
//
// A body of at most MultipartThreshold bytes goes up in one PutObject; a
// longer one as a multipart upload. A body that is an io.ReaderAt and an
// io.Seeker (a file, a bytes.Reader) is sent in sections of itself, without
// copies (put_readerat.go). Any other body is read in order into part
// buffers: at most Concurrency buffers of PartSize bytes per Put, plus one
// small buffer of up to 64 KiB (or of opts.Size, when that is at most the
// threshold).
//
// opts.Size >= 0 is checked: a body of another length fails the Put and
// stores nothing (0 announces an empty body). opts.Size < 0 means unknown.
//
// Conditions: IfNoneMatch sends If-None-Match: *, IfMatch sends If-Match,
// on PutObject or, for a multipart upload, on CompleteMultipartUpload, so
// the object appears (or not) atomically either way.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, opts remote.PutOptions) (remote.PutResult, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("s3store: put: %w", err)
	}
	if opts.IfNoneMatch && opts.IfMatch != "" {
		return remote.PutResult{}, fmt.Errorf("s3store: put %s: IfNoneMatch and IfMatch are exclusive", key)
	}
	if err := ctx.Err(); err != nil {
		return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
	}
	if r == nil {
		r = bytes.NewReader(nil) // the contract: a nil body is an empty one
	}
	if ra, ok := r.(readerAtBody); ok {
		start, size, ok, err := sizeOf(ra)
		if err != nil {
			return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
		}
		if ok {
			return s.putReaderAt(ctx, key, full, ra, start, size, opts)
		}
	}
	body := &bodyReader{r: r, h: xxhash.New(), want: opts.Size}
	threshold := s.cfg.MultipartThreshold

	// Read the head of the body: up to 64 KiB (or the announced size).
	scap := min(threshold, smallBody)
	if opts.Size >= 0 && opts.Size <= threshold {
		scap = opts.Size
	}
	small := make([]byte, scap)
	n, err := body.fill(small)
	if err != nil {
		return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
	}
	more := false
	if int64(n) == scap {
		if more, err = body.more(); err != nil {
			return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
		}
	}
	if !more {
		return s.putSingle(ctx, key, full, small[:n], body, opts)
	}

	// Longer: continue in a part buffer up to the threshold, then decide.
	buf := s.getPart()
	*buf = append((*buf)[:0], small[:n]...)
	small = nil
	if int64(len(*buf)) < threshold {
		m, err := body.fill((*buf)[len(*buf):threshold])
		*buf = (*buf)[:len(*buf)+m]
		if err != nil {
			s.parts.Put(buf)
			return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
		}
		more = false
		if int64(len(*buf)) == threshold {
			more, err = body.more()
			if err != nil {
				s.parts.Put(buf)
				return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
			}
		}
	}
	if !more {
		res, err := s.putSingle(ctx, key, full, *buf, body, opts)
		s.parts.Put(buf)
		return res, err
	}
	return s.putStream(ctx, key, full, buf, body, opts)
}

func (s *Store) getPart() *[]byte {
	b := s.parts.Get().(*[]byte)
	*b = (*b)[:0]
	return b
}

// conditions returns the condition headers of opts and the error class
// their failure maps to.
func conditions(opts remote.PutOptions) (ifNone, ifMatch *string, o op) {
	switch {
	case opts.IfNoneMatch:
		return aws.String("*"), nil, opPutIfNone
	case opts.IfMatch != "":
		return nil, aws.String(opts.IfMatch), opPutIfMatch
	}
	return nil, nil, opPut
}

// putSingle sends a body that ended within the threshold in one PutObject.
func (s *Store) putSingle(ctx context.Context, key, full string, data []byte, body *bodyReader, opts remote.PutOptions) (remote.PutResult, error) {
	if err := body.checkSize(); err != nil {
		return remote.PutResult{}, fmt.Errorf("s3store: put %s: %w", key, err)
	}
	ifNone, ifMatch, o := conditions(opts)
	// A bytes.Reader is seekable: the SDK can sign the payload and rewind
	// it for a retry.
	out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(full),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		IfNoneMatch:   ifNone,
		IfMatch:       ifMatch,
	})
	if err != nil {
		return remote.PutResult{}, mapErr(o, "put "+key, err)
	}
	return remote.PutResult{ETag: aws.ToString(out.ETag), Size: int64(len(data)), XXH64: body.h.Sum64()}, nil
}

// putStream uploads a body longer than the threshold that is read as a
// stream. first holds its first bytes (at least the threshold); the rest
// is read from body.
//
// Invariants: the body is read by this goroutine only, in order (so the
// hash is of the bytes in order); at most Concurrency part buffers exist,
// and a part's buffer is reused only after its UploadPart returned; the
// body must end with the announced size before the upload completes.
func (s *Store) putStream(ctx context.Context, key, full string, first *[]byte, body *bodyReader, opts remote.PutOptions) (remote.PutResult, error) {
	bufs := []*[]byte{first} // every buffer this Put took, returned at the end
	defer func() {
		for _, b := range bufs {
			s.parts.Put(b)
		}
	}()
	m, err := s.startMultipart(ctx, key, full)
	if err != nil {
		return remote.PutResult{}, err
	}
	free := make(chan *[]byte, s.cfg.Concurrency) // never blocks: holds every buffer
	buf := first
	for num := int32(1); ; num++ {
		if err := m.ctx.Err(); err != nil {
			m.fail(fmt.Errorf("s3store: put %s: %w", key, err))
			break
		}
		n, rerr := body.fill((*buf)[len(*buf):cap(*buf)])
		*buf = (*buf)[:len(*buf)+n]
		if rerr != nil {
			m.fail(fmt.Errorf("s3store: put %s: %w", key, rerr))
			break
		}
		more := false
		if len(*buf) == cap(*buf) {
			if more, rerr = body.more(); rerr != nil {
				m.fail(fmt.Errorf("s3store: put %s: %w", key, rerr))
				break
			}
		}
		if more && num == MaxParts {
			m.fail(fmt.Errorf("s3store: put %s: object exceeds %d parts of %d bytes", key, MaxParts, s.cfg.PartSize))
			break
		}
		b := buf
		m.send(num, bytes.NewReader(*b), int64(len(*b)), func() { free <- b })
		if !more {
			break
		}
		// Next buffer: a finished part's (already in memory) before a
		// new one, a new one while fewer than Concurrency exist, else
		// wait for a part to finish.
		select {
		case buf = <-free:
		default:
			if len(bufs) < s.cfg.Concurrency {
				buf = s.getPart()
				bufs = append(bufs, buf)
				break
			}
			select {
			case buf = <-free:
			case <-m.ctx.Done():
				m.fail(fmt.Errorf("s3store: put %s: %w", key, m.ctx.Err()))
			}
		}
		if m.ctx.Err() != nil {
			break
		}
		*buf = (*buf)[:0]
	}
	etag, err := m.finish(ctx, opts, body.checkSize)
	if err != nil {
		return remote.PutResult{}, err
	}
	return remote.PutResult{ETag: etag, Size: body.n, XXH64: body.h.Sum64()}, nil
}

// bodyReader reads a Put's body in order, hashing and counting every byte,
// with one byte of look-ahead to tell "exactly full" from "more to come".
type bodyReader struct {
	r      io.Reader
	h      *xxhash.Digest
	want   int64 // announced size, < 0 unknown
	n      int64 // bytes read from r (the peeked byte included)
	eof    bool
	peek   [1]byte
	peeked bool
}

// fill reads until p is full or the body ends and returns the count.
func (b *bodyReader) fill(p []byte) (int, error) {
	n := 0
	if len(p) > 0 && b.peeked {
		p[0] = b.peek[0]
		b.peeked = false
		n = 1
	}
	if n < len(p) && !b.eof {
		m, err := io.ReadFull(b.r, p[n:])
		b.h.Write(p[n : n+m])
		b.n += int64(m)
		n += m
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			b.eof = true
		case err != nil:
			return n, fmt.Errorf("read body: %w", err)
		}
	}
	if b.want >= 0 && b.n > b.want {
		return n, fmt.Errorf("body longer than the announced %d bytes", b.want)
	}
	return n, nil
}

// more reports whether the body has bytes left, reading one ahead if needed.
func (b *bodyReader) more() (bool, error) {
	if b.peeked {
		return true, nil
	}
	if b.eof {
		return false, nil
	}
	m, err := io.ReadFull(b.r, b.peek[:])
	if m == 1 {
		b.h.Write(b.peek[:])
		b.n++
		b.peeked = true
		if b.want >= 0 && b.n > b.want {
			return true, fmt.Errorf("body longer than the announced %d bytes", b.want)
		}
		return true, nil
	}
	if err == io.EOF {
		b.eof = true
		return false, nil
	}
	return false, fmt.Errorf("read body: %w", err)
}

// checkSize, at the end of the body, compares its length with the
// announced one.
func (b *bodyReader) checkSize() error {
	if b.want >= 0 && b.n != b.want {
		return fmt.Errorf("body has %d bytes, PutOptions.Size announced %d", b.n, b.want)
	}
	return nil
}
