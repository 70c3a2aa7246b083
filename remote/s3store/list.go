package s3store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/bopstore/bop/remote"
)

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	full, err := s.fullKey(key)
	if err != nil {
		return fmt.Errorf("s3store: delete: %w", err)
	}
	_, err = s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(full)})
	if err != nil {
		err = mapErr(opRead, "delete "+key, err)
		if errors.Is(err, remote.ErrNotFound) {
			return nil // S3 answers 204 here; some compatible servers 404
		}
		return err
	}
	return nil
}

// List calls fn for every key under prefix, in lexicographic order, with
// ListObjectsV2 pages of up to 1000 keys. Keys come back without the
// store's prefix. A server that lists out of order is an error: callers
// (GC, orphan sweeps) rely on the order.
func (s *Store) List(ctx context.Context, prefix string, fn func(remote.ObjectInfo) error) error {
	if err := remote.ValidatePrefix(prefix); err != nil {
		return fmt.Errorf("s3store: list: %w", err)
	}
	strip := ""
	if s.cfg.Prefix != "" {
		strip = s.cfg.Prefix + "/"
	}
	in := &s3.ListObjectsV2Input{
		Bucket: aws.String(s.cfg.Bucket),
		Prefix: aws.String(strip + prefix),
	}
	last := ""
	for {
		out, err := s.client.ListObjectsV2(ctx, in)
		if err != nil {
			return mapErr(opList, "list "+prefix, err)
		}
		for _, o := range out.Contents {
			full := aws.ToString(o.Key)
			key, ok := strings.CutPrefix(full, strip)
			if !ok || !strings.HasPrefix(key, prefix) {
				return fmt.Errorf("s3store: list %s: server returned key %q outside the prefix", prefix, full)
			}
			if strings.HasSuffix(key, "/") {
				continue // a directory marker, not an object of ours
			}
			if key <= last && last != "" {
				return fmt.Errorf("s3store: list %s: server returned %q after %q, out of order", prefix, key, last)
			}
			last = key
			if err := fn(remote.ObjectInfo{
				Key:     key,
				Size:    aws.ToInt64(o.Size),
				ETag:    aws.ToString(o.ETag),
				ModTime: aws.ToTime(o.LastModified),
			}); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) {
			return nil
		}
		next := aws.ToString(out.NextContinuationToken)
		if next == "" {
			return fmt.Errorf("s3store: list %s: truncated page without a continuation token", prefix)
		}
		in.ContinuationToken = aws.String(next)
	}
}
