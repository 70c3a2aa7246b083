package remote

import (
	"fmt"
	"strings"
)

// Key rules. Every key a Store accepts:
//   - is 1 to MaxKeyLen bytes of [A-Za-z0-9._-] and '/';
//   - has no leading or trailing '/', no empty segment ("a//b"), and no
//     "." or ".." segment;
//   - has no segment longer than MaxSegmentLen bytes, the file name limit
//     of common file systems (fsstore, versitygw's posix backend).
//
// The Layout below additionally guarantees that no key is a path prefix
// (a "directory") of another key: versitygw's posix backend, and any
// file system, cannot hold both "a/b" and "a/b/c".
const (
	MaxKeyLen     = 1024
	MaxSegmentLen = 255
)

// ValidateKey reports whether key follows the key rules.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key of %d bytes exceeds %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if key[0] == '/' || key[len(key)-1] == '/' {
		return fmt.Errorf("%w: %q: leading or trailing '/'", ErrInvalidKey, key)
	}
	for _, c := range []byte(key) {
		if !keyByte(c) {
			return fmt.Errorf("%w: %q: byte %q not allowed", ErrInvalidKey, key, c)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: %q: empty path segment", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w: %q: %q segment", ErrInvalidKey, key, seg)
		}
		if len(seg) > MaxSegmentLen {
			return fmt.Errorf("%w: segment of %d bytes exceeds %d", ErrInvalidKey, len(seg), MaxSegmentLen)
		}
	}
	return nil
}

// ValidatePrefix checks a List prefix or a store URL prefix: empty, or a
// valid key optionally followed by '/'.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return ValidateKey(strings.TrimSuffix(prefix, "/"))
}

func keyByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '.' || c == '_' || c == '-' || c == '/'
}

// ValidateName checks a tenant, database or pin name: 1 to 64 bytes of
// lowercase [a-z0-9._-], starting with a letter or digit. Lowercase only,
// so that names never collide on case-insensitive file systems; no '/', so
// that one name can never reach into another's keys.
func ValidateName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("remote: empty %s name", kind)
	}
	if len(name) > 64 {
		return fmt.Errorf("remote: %s name %q longer than 64 bytes", kind, name)
	}
	for i, c := range []byte(name) {
		ok := 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if !ok {
			return fmt.Errorf("remote: %s name %q: byte %q at %d not allowed (lowercase letters, digits, '.', '_', '-'; first a letter or digit)", kind, name, c, i)
		}
	}
	return nil
}

// DefaultTenant is the tenant of a database opened without one.
const DefaultTenant = "default"

// Layout places one database's keys in a store:
//
//	<tenant>/<db>/head                     small JSON, replaced with If-Match
//	<tenant>/<db>/log/<seq %020d>          one record per publish, If-None-Match
//	<tenant>/<db>/manifest/<seq %020d>.db  periodic full catalog snapshot
//	<tenant>/<db>/pins/<id>.pin            retention holds from other nodes
//	<tenant>/<db>/obj/<kind>-<id %016x>-<hash %016x>   immutable page objects
//	<tenant>/<db>/probe/<id>.probe         conditional-write probe objects
//
// Both levels always exist (the tenant defaults to DefaultTenant), every
// leaf name has a fixed width or a suffix, and "head" is a leaf while the
// others are folders, so no key is a path prefix of another.
type Layout struct {
	Tenant string
	DB     string
}

// NewLayout validates the names. An empty tenant means DefaultTenant.
func NewLayout(tenant, db string) (Layout, error) {
	if tenant == "" {
		tenant = DefaultTenant
	}
	if err := ValidateName("tenant", tenant); err != nil {
		return Layout{}, err
	}
	if err := ValidateName("database", db); err != nil {
		return Layout{}, err
	}
	return Layout{Tenant: tenant, DB: db}, nil
}

// Root is the folder holding every key of the database, with a trailing '/'.
func (l Layout) Root() string { return l.Tenant + "/" + l.DB + "/" }

// Head is the key of the database's head record.
func (l Layout) Head() string { return l.Root() + "head" }

// LogPrefix is the folder of the publish log, with a trailing '/'.
func (l Layout) LogPrefix() string { return l.Root() + "log/" }

// Log is the key of publish record seq.
func (l Layout) Log(seq uint64) string { return fmt.Sprintf("%slog/%020d", l.Root(), seq) }

// Snapshot is the key of the catalog snapshot taken at publish seq.
func (l Layout) Snapshot(seq uint64) string {
	return fmt.Sprintf("%smanifest/%020d.db", l.Root(), seq)
}

// PinPrefix is the folder of remote pins, with a trailing '/'.
func (l Layout) PinPrefix() string { return l.Root() + "pins/" }

// Pin is the key of the remote pin id. The id must pass ValidateName.
func (l Layout) Pin(id string) (string, error) {
	if err := ValidateName("pin", id); err != nil {
		return "", err
	}
	return l.Root() + "pins/" + id + ".pin", nil
}

// ObjectPrefix is the folder of page objects, with a trailing '/'.
func (l Layout) ObjectPrefix() string { return l.Root() + "obj/" }

// Object is the key of a page object. kind is "base" or "delta"; id is the
// object's catalog id; hash is the xxhash64 of the whole object, so a key
// names exactly one content and re-uploading it is idempotent.
func (l Layout) Object(kind string, id, hash uint64) (string, error) {
	if kind != "base" && kind != "delta" {
		return "", fmt.Errorf("remote: object kind %q is neither base nor delta", kind)
	}
	return fmt.Sprintf("%sobj/%s-%016x-%016x", l.Root(), kind, id, hash), nil
}

// Probe is the key of a conditional-write probe object.
func (l Layout) Probe(id string) (string, error) {
	if err := ValidateName("probe", id); err != nil {
		return "", err
	}
	return l.Root() + "probe/" + id + ".probe", nil
}
