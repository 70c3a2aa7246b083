package remote

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestValidateKeyRejects(t *testing.T) {
	long := strings.Repeat("a", MaxKeyLen+1)
	longSeg := "a/" + strings.Repeat("b", MaxSegmentLen+1) + "/c"
	bad := []string{
		"", "/", "//", "/a", "a/", "/a/", "a//b", "a///b",
		".", "..", "a/.", "a/..", "./a", "../a", "a/./b", "a/../b",
		"a b", "a\tb", "a\nb", "a\x00b", "a\\b", "a:b", "a*b", "a?b", "a#b", "a%b", "a+b", "a~b",
		"é", "a\x7fb", "a\xffb", "a/b/",
		long, longSeg,
	}
	for _, k := range bad {
		err := ValidateKey(k)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v; want ErrInvalidKey", k, err)
		}
	}
}

func TestValidateKeyAccepts(t *testing.T) {
	maxSeg := strings.Repeat("s", MaxSegmentLen)
	// Exactly MaxKeyLen bytes: segments of 255, 255, 255, 254 and 1 bytes.
	maxKey := maxSeg + "/" + maxSeg + "/" + maxSeg + "/" + maxSeg[1:] + "/x"
	good := []string{
		"a", "A", "0", "a/b", "a/b/c", "a-b", "a_b", "a.b", "...", ".a", "a.", "..a", "a..", ".a/..b/c..",
		"-", "_", "default/db/head", "t/d/log/00000000000000000001",
		maxSeg, "x/" + maxSeg,
	}
	for _, k := range good {
		if err := ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q): %v", k, err)
		}
	}
	if len(maxKey) != MaxKeyLen {
		t.Fatalf("test bug: max key has %d bytes", len(maxKey))
	}
	if err := ValidateKey(maxKey); err != nil {
		t.Errorf("ValidateKey of a %d-byte key: %v", len(maxKey), err)
	}
	if err := ValidateKey(maxKey + "x"); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("ValidateKey of a %d-byte key: %v; want ErrInvalidKey", len(maxKey)+1, err)
	}
}

func TestValidateKeyEveryByte(t *testing.T) {
	for c := 0; c < 256; c++ {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
		key := "x" + string([]byte{byte(c)}) + "y"
		err := ValidateKey(key)
		if ok && err != nil {
			t.Errorf("byte %#x rejected: %v", c, err)
		}
		if !ok && c != '/' && !errors.Is(err, ErrInvalidKey) {
			t.Errorf("byte %#x accepted", c)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	for _, p := range []string{"", "a", "a/", "a/b", "a/b/", "a/b-"} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q): %v", p, err)
		}
	}
	for _, p := range []string{"/", "/a", "a//", "a//b", "a/../", "../", "a b/", "//"} {
		if err := ValidatePrefix(p); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v; want ErrInvalidKey", p, err)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, n := range []string{"a", "0", "db", "my-db", "my_db.v2", "a1", strings.Repeat("z", 64), "9lives"} {
		if err := ValidateName("database", n); err != nil {
			t.Errorf("ValidateName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "A", "Db", "-a", ".a", "_a", "a/b", "a b", "é", strings.Repeat("z", 65), "a\x00", "..", "."} {
		if err := ValidateName("database", n); err == nil {
			t.Errorf("ValidateName(%q) accepted", n)
		}
	}
	if err := ValidateName("tenant", ""); err == nil || !strings.Contains(err.Error(), "tenant") {
		t.Errorf("error does not name the kind: %v", err)
	}
}

func TestNewLayout(t *testing.T) {
	l, err := NewLayout("", "app")
	if err != nil || l.Tenant != DefaultTenant || l.DB != "app" {
		t.Fatalf("NewLayout(\"\", app) = %+v, %v", l, err)
	}
	for _, c := range [][2]string{{"Bad", "db"}, {"t", ""}, {"t", "a/b"}, {"t/x", "db"}, {"t", "DB"}} {
		if _, err := NewLayout(c[0], c[1]); err == nil {
			t.Errorf("NewLayout(%q, %q) accepted", c[0], c[1])
		}
	}
	if _, err := l.Object("snapshot", 1, 2); err == nil {
		t.Error("Object kind snapshot accepted")
	}
	for _, id := range []string{"", "A", "x/y", "../a"} {
		if _, err := l.Pin(id); err == nil {
			t.Errorf("Pin(%q) accepted", id)
		}
		if _, err := l.Probe(id); err == nil {
			t.Errorf("Probe(%q) accepted", id)
		}
	}
}

func TestLayoutKeys(t *testing.T) {
	l, err := NewLayout("acme", "app")
	if err != nil {
		t.Fatal(err)
	}
	obj, _ := l.Object("delta", 0xabc, 0x1234)
	pin, _ := l.Pin("node-1")
	probe, _ := l.Probe("p1")
	for _, c := range [][2]string{
		{l.Root(), "acme/app/"},
		{l.Head(), "acme/app/head"},
		{l.LogPrefix(), "acme/app/log/"},
		{l.Log(42), "acme/app/log/00000000000000000042"},
		{l.Log(math.MaxUint64), "acme/app/log/18446744073709551615"},
		{l.Snapshot(7), "acme/app/manifest/00000000000000000007.db"},
		{l.PinPrefix(), "acme/app/pins/"},
		{pin, "acme/app/pins/node-1.pin"},
		{l.ObjectPrefix(), "acme/app/obj/"},
		{obj, "acme/app/obj/delta-0000000000000abc-0000000000001234"},
		{probe, "acme/app/probe/p1.probe"},
	} {
		if c[0] != c[1] {
			t.Errorf("got %q, want %q", c[0], c[1])
		}
	}
	// Fixed-width seqs sort numerically as strings: List order is log order.
	if !(l.Log(9) < l.Log(10) && l.Log(99999) < l.Log(100000) && l.Log(math.MaxUint64-1) < l.Log(math.MaxUint64)) {
		t.Error("log keys do not sort in seq order")
	}
	// Prefix helpers are prefixes of their keys.
	if !strings.HasPrefix(l.Log(1), l.LogPrefix()) || !strings.HasPrefix(pin, l.PinPrefix()) || !strings.HasPrefix(obj, l.ObjectPrefix()) {
		t.Error("a key is outside its prefix")
	}
}

// layoutKeys generates every kind of key for a set of layouts whose names
// are chosen to collide if the layout were careless: names that equal the
// fixed folder names, names that are prefixes of each other.
func layoutKeys(t *testing.T) []string {
	names := []string{"a", "ab", "a.b", "a-b", "head", "log", "obj", "pins", "manifest", "probe", "default", "0", "00"}
	seqs := []uint64{0, 1, 9, 10, 12345, math.MaxUint32, math.MaxUint32 + 1, math.MaxUint64}
	var keys []string
	for _, tenant := range names {
		for _, db := range names {
			l, err := NewLayout(tenant, db)
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, l.Head())
			for _, s := range seqs {
				keys = append(keys, l.Log(s), l.Snapshot(s))
				for _, kind := range []string{"base", "delta"} {
					k, err := l.Object(kind, s, ^s)
					if err != nil {
						t.Fatal(err)
					}
					keys = append(keys, k)
				}
			}
			for _, id := range names {
				pin, err := l.Pin(id)
				if err != nil {
					t.Fatal(err)
				}
				probe, err := l.Probe(id)
				if err != nil {
					t.Fatal(err)
				}
				keys = append(keys, pin, probe)
			}
		}
	}
	return keys
}

// TestLayoutNoKeyIsAFolder: no Layout key is a path prefix ("folder") of
// another, so every key fits a file system and versitygw's posix backend;
// distinct inputs give distinct keys, and every key passes ValidateKey.
func TestLayoutNoKeyIsAFolder(t *testing.T) {
	keys := layoutKeys(t)
	set := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			t.Fatalf("layout key fails the key rules: %v", err)
		}
		if set[k] {
			t.Fatalf("two different inputs give the key %q", k)
		}
		set[k] = true
	}
	for _, k := range keys {
		// Every proper path prefix ("a", "a/b" of "a/b/c") must not be a key.
		for i := range len(k) {
			if k[i] == '/' && set[k[:i]] {
				t.Fatalf("key %q is a folder of key %q", k[:i], k)
			}
		}
	}
	t.Logf("%d keys checked", len(keys))
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a//b", "/a", "a/../b", ".", "..", "a/.", strings.Repeat("a", 300), "t/d/log/00000000000000000001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, not ErrInvalidKey", key, err)
			}
			return
		}
		// What the rules promise for every accepted key.
		if len(key) == 0 || len(key) > MaxKeyLen {
			t.Fatalf("accepted %d-byte key", len(key))
		}
		for _, seg := range strings.Split(key, "/") {
			if seg == "" || seg == "." || seg == ".." || len(seg) > MaxSegmentLen {
				t.Fatalf("accepted key %q with segment %q", key, seg)
			}
		}
		for i := 0; i < len(key); i++ {
			if !keyByte(key[i]) {
				t.Fatalf("accepted key %q with byte %#x", key, key[i])
			}
		}
		if err := ValidatePrefix(key); err != nil {
			t.Fatalf("valid key %q is not a valid prefix: %v", key, err)
		}
		if err := ValidatePrefix(key + "/"); err != nil {
			t.Fatalf("valid key %q plus '/' is not a valid prefix: %v", key, err)
		}
	})
}
