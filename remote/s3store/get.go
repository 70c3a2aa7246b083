package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bopstore/bop/remote"
)

// Get returns length bytes of key from off (length < 0: to the end) with
// one ranged GET (see remote.Store). The server sends only the range; a
// server that ignores the Range header is an error, never a whole-object
// download. The body is checked to end exactly where the server said it
// would.
func (s *Store) Get(ctx context.Context, key string, off, length int64) (io.ReadCloser, remote.ObjectInfo, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return nil, remote.ObjectInfo{}, fmt.Errorf("s3store: get: %w", err)
	}
	if off < 0 {
		return nil, remote.ObjectInfo{}, fmt.Errorf("s3store: get %s: %w: negative offset %d", key, remote.ErrInvalidRange, off)
	}
	if length == 0 {
		// HTTP cannot express an empty range: check the offset with a
		// HEAD instead.
		info, err := s.Head(ctx, key)
		if err != nil {
			return nil, remote.ObjectInfo{}, err
		}
		if off > info.Size {
			return nil, remote.ObjectInfo{}, fmt.Errorf("s3store: get %s: %w: offset %d past size %d", key, remote.ErrInvalidRange, off, info.Size)
		}
		return io.NopCloser(strings.NewReader("")), info, nil
	}

	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(full)}
	ranged := off > 0 || length > 0
	if ranged {
		if length < 0 || length > math.MaxInt64-off {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-", off))
		} else {
			in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", off, off+length-1))
		}
	}
	out, err := s.client.GetObject(ctx, in)
	if err != nil {
		err = mapErr(opRead, "get "+key, err)
		if errors.Is(err, remote.ErrInvalidRange) {
			// S3 finds a range starting at the object's end
			// unsatisfiable (bytes=0-N of an empty object too); the
			// contract reads it as empty.
			info, herr := s.Head(ctx, key)
			if herr == nil && off == info.Size {
				return io.NopCloser(strings.NewReader("")), info, nil
			}
		}
		return nil, remote.ObjectInfo{}, err
	}
	info := remote.ObjectInfo{
		Key:     key,
		ETag:    aws.ToString(out.ETag),
		ModTime: aws.ToTime(out.LastModified),
	}
	n := aws.ToInt64(out.ContentLength)
	if ranged {
		start, end, total, ok := parseContentRange(aws.ToString(out.ContentRange))
		if !ok {
			out.Body.Close()
			return nil, remote.ObjectInfo{}, fmt.Errorf("s3store: get %s: server ignored Range %q (Content-Range %q)", key, aws.ToString(in.Range), aws.ToString(out.ContentRange))
		}
		if start != off || (length > 0 && end-start+1 > length) || (length < 0 && end != total-1) || end-start+1 != n {
			out.Body.Close()
			return nil, remote.ObjectInfo{}, fmt.Errorf("s3store: get %s: asked %s, server sent %q with %d bytes", key, aws.ToString(in.Range), aws.ToString(out.ContentRange), n)
		}
		info.Size = total
	} else {
		info.Size = n
	}
	return &exactBody{ctx: ctx, key: key, rc: out.Body, left: n}, info, nil
}

// parseContentRange parses "bytes start-end/total" (digits only, as RFC
// 9110 writes it), with start <= end < total.
func parseContentRange(v string) (start, end, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, 0, false
	}
	var okA, okB, okT bool
	start, okA = parseDigits(a)
	end, okB = parseDigits(b)
	total, okT = parseDigits(tot)
	if !okA || !okB || !okT || end < start || total <= end {
		return 0, 0, 0, false
	}
	return start, end, total, true
}

// parseDigits parses a non-empty decimal number of at most 18 digits (so
// it fits an int64 without overflow checks).
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// exactBody passes through exactly left bytes: an early end is
// io.ErrUnexpectedEOF, never a short object taken for a whole one, and
// nothing past the announced length is read.
//
// It checks ctx before each read. The HTTP transport also aborts the body
// when ctx is cancelled, but from another goroutine: until that lands, bytes
// already in the socket buffers (megabytes on loopback) would still be
// delivered, so a cancelled read could run to a clean end.
type exactBody struct {
	ctx  context.Context
	key  string
	rc   io.ReadCloser
	left int64
}

func (b *exactBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if err := b.ctx.Err(); err != nil {
		return 0, fmt.Errorf("s3store: read %s: %w", b.key, err)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	if err == io.EOF {
		if b.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		return n, io.EOF
	}
	if err != nil {
		return n, fmt.Errorf("s3store: read body: %w", err)
	}
	return n, nil
}

func (b *exactBody) Close() error { return b.rc.Close() }

// Head returns the object's metadata, or remote.ErrNotFound.
func (s *Store) Head(ctx context.Context, key string) (remote.ObjectInfo, error) {
	full, err := s.fullKey(key)
	if err != nil {
		return remote.ObjectInfo{}, fmt.Errorf("s3store: head: %w", err)
	}
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(full)})
	if err != nil {
		return remote.ObjectInfo{}, mapErr(opRead, "head "+key, err)
	}
	return remote.ObjectInfo{
		Key:     key,
		Size:    aws.ToInt64(out.ContentLength),
		ETag:    aws.ToString(out.ETag),
		ModTime: aws.ToTime(out.LastModified),
	}, nil
}
