package manifest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Every small object bop keeps in the store (head, log record, pin) is a
// JSON envelope around a JSON body:
//
//	{"bop":"log","v":1,"xxh64":"<16 hex digits>","body":{...}}
//
// xxh64 is the xxhash64 of the body's exact bytes. Decoding checks the
// kind, the envelope version and the hash before the body is parsed, so a
// flipped bit or a truncated object is an ErrCorrupt naming the key, never
// a silently different value.

const envelopeVersion = 1

// maxEnvelope bounds what we read of a head, record or pin: a record lists
// the objects of one publish, far below this.
const maxEnvelope = 64 << 20

type envelope struct {
	Kind  string          `json:"bop"`
	V     int             `json:"v"`
	XXH64 Hash            `json:"xxh64"`
	Body  json.RawMessage `json:"body"`
}

// Hash is a 64-bit content hash, written in JSON as 16 hex digits so that
// tools that read numbers as doubles cannot round it.
type Hash uint64

func (h Hash) String() string { return fmt.Sprintf("%016x", uint64(h)) }

// MarshalJSON writes the hash as a 16-digit hex string.
func (h Hash) MarshalJSON() ([]byte, error) {
	return []byte(`"` + h.String() + `"`), nil
}

// UnmarshalJSON reads 16 hex digits.
func (h *Hash) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if len(s) != 16 {
		return fmt.Errorf("hash %q is not 16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return fmt.Errorf("hash %q: %w", s, err)
	}
	*h = Hash(v)
	return nil
}

// sealEnvelope encodes body and wraps it.
func sealEnvelope(kind string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("manifest: encode %s: %w", kind, err)
	}
	return json.Marshal(envelope{Kind: kind, V: envelopeVersion, XXH64: Hash(xxhash.Sum64(b)), Body: b})
}

// openEnvelope checks data and decodes its body into out, a struct with
// a "format" field: a body of a newer format is ErrFormatTooNew (checked
// before strict decoding, so new fields read as "too new", not "corrupt").
// where names the key (or file) for error messages.
func openEnvelope(where, kind string, data []byte, maxFormat int, out any) error {
	var env envelope
	if err := json.Unmarshal(data, &env); err != nil {
		return corruptf(where, "not a %s envelope (%d bytes): %v", kind, len(data), err)
	}
	if env.Kind != kind {
		return corruptf(where, "envelope holds %q, want %q", env.Kind, kind)
	}
	if env.V > envelopeVersion {
		return fmt.Errorf("%w: %s: envelope version %d, this bop reads up to %d", ErrFormatTooNew, where, env.V, envelopeVersion)
	}
	if env.V < 1 {
		return corruptf(where, "envelope version %d", env.V)
	}
	if got := Hash(xxhash.Sum64(env.Body)); got != env.XXH64 {
		return corruptf(where, "body hash %s, envelope says %s", got, env.XXH64)
	}
	var f struct {
		Format int `json:"format"`
	}
	if err := json.Unmarshal(env.Body, &f); err != nil {
		return corruptf(where, "decode %s body: %v", kind, err)
	}
	if f.Format > maxFormat {
		return fmt.Errorf("%w: %s: %s format %d, this bop reads up to %d", ErrFormatTooNew, where, kind, f.Format, maxFormat)
	}
	if f.Format < 1 {
		return corruptf(where, "%s format %d", kind, f.Format)
	}
	dec := json.NewDecoder(bytes.NewReader(env.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return corruptf(where, "decode %s body: %v", kind, err)
	}
	if dec.More() {
		return corruptf(where, "trailing data after %s body", kind)
	}
	return nil
}

// readAllLimit reads r up to limit bytes; more is an error (bounded memory).
func readAllLimit(r io.Reader, limit int64, where string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: read %s: %w", where, err)
	}
	if int64(len(b)) > limit {
		return nil, corruptf(where, "larger than %d bytes", limit)
	}
	return b, nil
}
