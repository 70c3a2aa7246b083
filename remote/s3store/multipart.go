package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/bopstore/bop/remote"
)

// abortTimeout bounds AbortMultipartUpload, which runs on a context
// detached from the caller's: a cancelled Put must still clean up.
const abortTimeout = 30 * time.Second

// multipart is one multipart upload in progress, shared by the two ways a
// Put feeds it (a stream read into part buffers, or sections of an
// io.ReaderAt).
//
// Invariants: the upload is completed only when every part succeeded and
// the caller's final check passed, and aborted in every other case
// (a part's error, a body error, cancellation, a lost condition); the
// abort happens after every part goroutine has returned, so no part can
// land after it.
type multipart struct {
	s      *Store
	key    string // the caller's key, for messages
	full   string // the key in the bucket
	id     string
	ctx    context.Context // the parts' context: cancelled on the first failure
	cancel context.CancelFunc

	wg     sync.WaitGroup
	mu     sync.Mutex
	parts  []types.CompletedPart
	failed error
}

func (s *Store) startMultipart(ctx context.Context, key, full string) (*multipart, error) {
	created, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(full),
	})
	if err != nil {
		return nil, mapErr(opPut, "put "+key+": create multipart upload", err)
	}
	id := aws.ToString(created.UploadId)
	if id == "" {
		return nil, fmt.Errorf("s3store: put %s: server returned no upload id", key)
	}
	m := &multipart{s: s, key: key, full: full, id: id}
	m.ctx, m.cancel = context.WithCancel(ctx)
	return m, nil
}

// fail records the first error (already carrying context) and stops the
// parts in flight.
func (m *multipart) fail(err error) {
	m.mu.Lock()
	if m.failed == nil {
		m.failed = err
		m.cancel()
	}
	m.mu.Unlock()
}

// send uploads part num from body (seekable, so the SDK can sign it and
// rewind it for a retry) in its own goroutine. done, if set, runs once
// UploadPart has returned, whatever the outcome: the body is free again.
func (m *multipart) send(num int32, body io.ReadSeeker, size int64, done func()) {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		out, err := m.s.client.UploadPart(m.ctx, &s3.UploadPartInput{
			Bucket:        aws.String(m.s.cfg.Bucket),
			Key:           aws.String(m.full),
			UploadId:      aws.String(m.id),
			PartNumber:    aws.Int32(num),
			Body:          body,
			ContentLength: aws.Int64(size),
		})
		if done != nil {
			done()
		}
		if err != nil {
			m.fail(mapErr(opPut, fmt.Sprintf("put %s: upload part %d", m.key, num), err))
			return
		}
		m.mu.Lock()
		m.parts = append(m.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
		m.mu.Unlock()
	}()
}

// finish waits for every part, runs check (the body's size), and
// completes the upload with opts' condition, or aborts it. It returns the
// object's ETag.
func (m *multipart) finish(ctx context.Context, opts remote.PutOptions, check func() error) (etag string, err error) {
	m.wg.Wait()
	defer m.cancel()
	m.mu.Lock()
	err = m.failed
	m.mu.Unlock()
	if err == nil && check != nil {
		if cerr := check(); cerr != nil {
			err = fmt.Errorf("s3store: put %s: %w", m.key, cerr)
		}
	}
	if err == nil {
		slices.SortFunc(m.parts, func(a, b types.CompletedPart) int {
			return int(aws.ToInt32(a.PartNumber) - aws.ToInt32(b.PartNumber))
		})
		ifNone, ifMatch, o := conditions(opts)
		var out *s3.CompleteMultipartUploadOutput
		out, err = m.s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
			Bucket:          aws.String(m.s.cfg.Bucket),
			Key:             aws.String(m.full),
			UploadId:        aws.String(m.id),
			MultipartUpload: &types.CompletedMultipartUpload{Parts: m.parts},
			IfNoneMatch:     ifNone,
			IfMatch:         ifMatch,
		})
		if err == nil {
			return aws.ToString(out.ETag), nil
		}
		err = mapErr(o, "put "+m.key+": complete multipart upload", err)
	}
	if aerr := m.abort(ctx); aerr != nil {
		err = fmt.Errorf("%w (and %v)", err, aerr)
	}
	return "", err
}

// abort removes the upload and its parts, on a context detached from
// ctx so that a cancelled Put still cleans up.
//
// A part request that the client gave up on (cancellation) may still be
// finishing on the server, and bring the upload back after the abort: S3
// documents that an upload may need aborting more than once, and
// versitygw re-creates the upload's folder when such a part lands. So
// abort, then check with ListParts that the upload is gone, and repeat a
// few times with growing pauses.
func (m *multipart) abort(ctx context.Context) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abortTimeout)
	defer cancel()
	pause := 20 * time.Millisecond
	for attempt := 1; ; attempt++ {
		_, err := m.s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
			Bucket:   aws.String(m.s.cfg.Bucket),
			Key:      aws.String(m.full),
			UploadId: aws.String(m.id),
		})
		if err != nil && !noSuchUpload(err) {
			return mapErr(opPut, "abort multipart upload "+m.id, err)
		}
		select {
		case <-time.After(pause):
		case <-actx.Done():
			return fmt.Errorf("s3store: abort multipart upload %s: %w", m.id, actx.Err())
		}
		pause *= 2
		_, err = m.s.client.ListParts(actx, &s3.ListPartsInput{
			Bucket:   aws.String(m.s.cfg.Bucket),
			Key:      aws.String(m.full),
			UploadId: aws.String(m.id),
			MaxParts: aws.Int32(1),
		})
		switch {
		case noSuchUpload(err):
			return nil
		case err != nil:
			return mapErr(opPut, "check abort of multipart upload "+m.id, err)
		case attempt == 5:
			return fmt.Errorf("s3store: multipart upload %s still present after %d aborts", m.id, attempt)
		}
	}
}

func noSuchUpload(err error) bool {
	var apiErr smithy.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchUpload"
}
