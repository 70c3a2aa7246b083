package s3store

import (
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"

	"github.com/bopstore/bop/remote"
)

// ErrNoBucket: the bucket does not exist. Deliberately not
// remote.ErrNotFound: a missing bucket must never read as "no such key",
// or a cold open would take a misconfigured store for an empty database.
var ErrNoBucket = errors.New("S3 bucket does not exist")

// op says which call an error came from; the same status means different
// things for different calls.
type op int

const (
	opRead       op = iota // GetObject, HeadObject, DeleteObject
	opList                 // ListObjectsV2: a 404 is never "no such key"
	opPut                  // PutObject, multipart calls, no condition
	opPutIfNone            // PutObject/Complete with If-None-Match: *
	opPutIfMatch           // PutObject/Complete with If-Match
)

// mapErr wraps an SDK error with context and, where a caller decides on
// it, a remote sentinel:
//
//   - 412 or PreconditionFailed: ErrPrecondition.
//   - ConditionalRequestConflict (409), or a 409 without a code on a
//     conditional put: ErrPrecondition (S3 answers 409 when a
//     conditional write races another write of the key). A 409 with
//     another code (versitygw's ExistingObjectIsDirectory,
//     ObjectParentIsFile; OperationAborted) is some other conflict and
//     stays an error: taking it for a lost race would send the caller
//     looking for a winner that does not exist.
//   - 404 on If-Match: ErrPrecondition (the contract: a missing key fails
//     the condition). 404 NoSuchBucket: ErrNoBucket, always. Other 404s
//     on reads: ErrNotFound; on plain puts (NoSuchUpload) an error.
//   - 416 or InvalidRange: ErrInvalidRange.
//
// The SDK error stays in the chain (both are wrapped), so errors.Is finds
// context.Canceled and errors.As finds the smithy.APIError.
func mapErr(o op, what string, err error) error {
	if err == nil {
		return nil
	}
	code := ""
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		code = apiErr.ErrorCode()
	}
	status := 0
	var respErr *awshttp.ResponseError
	if errors.As(err, &respErr) {
		status = respErr.HTTPStatusCode()
	}
	conditional := o == opPutIfNone || o == opPutIfMatch
	var sentinel error
	switch {
	case code == "NoSuchBucket":
		sentinel = ErrNoBucket
	case status == http.StatusPreconditionFailed || code == "PreconditionFailed":
		sentinel = remote.ErrPrecondition
	case code == "ConditionalRequestConflict" || (conditional && status == http.StatusConflict && code == ""):
		sentinel = remote.ErrPrecondition
	case status == http.StatusRequestedRangeNotSatisfiable || code == "InvalidRange":
		sentinel = remote.ErrInvalidRange
	case code == "NoSuchUpload":
		// A multipart upload vanished (aborted elsewhere, or expired by
		// a lifecycle rule): the put failed, nothing to decide on.
	case status == http.StatusNotFound || code == "NoSuchKey" || code == "NotFound":
		switch o {
		case opRead:
			sentinel = remote.ErrNotFound
		case opPutIfMatch:
			sentinel = remote.ErrPrecondition
		}
	}
	if sentinel != nil {
		return fmt.Errorf("s3store: %s: %w: %w", what, sentinel, err)
	}
	return fmt.Errorf("s3store: %s: %w", what, err)
}
