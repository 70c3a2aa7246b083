package fsstore

import (
	"io/fs"
	"strconv"

	"github.com/bopstore/bop/remote"
)

// etag derives an object's ETag from its stat: "<mtime ns>-<size>-<inode>"
// in hex. Cheap (no read of the content) and never repeated for different
// content of one key, because fsstore gives every object it writes a
// unique mtime (treeLock.stamp). Size and inode are there for files changed
// behind the store's back: an in-place edit changes the size or the mtime
// unless a tool deliberately restores both, and a replaced file has a new
// inode.
func etag(fi fs.FileInfo) string {
	ino, _ := inode(fi)
	b := make([]byte, 0, 48)
	b = strconv.AppendUint(b, uint64(fi.ModTime().UnixNano()), 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, uint64(fi.Size()), 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, ino, 16)
	return string(b)
}

func objectInfo(key string, fi fs.FileInfo) remote.ObjectInfo {
	return remote.ObjectInfo{Key: key, Size: fi.Size(), ETag: etag(fi), ModTime: fi.ModTime()}
}
