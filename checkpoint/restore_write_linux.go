package checkpoint

import (
	"io"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeScratch is what writePages reuses between calls.
type writeScratch struct{ iov []syscall.Iovec }

// halfWord is half a word's bits: pwritev takes the offset as a low and a
// high word, and the kernel joins them as (high << halfWord << halfWord)
// | low, so that on 64-bit systems the high word is ignored and on 32-bit
// ones it carries bits 32..63.
const halfWord = unsafe.Sizeof(uintptr(0)) * 4

// writePages writes pages back to back at off with pwritev: the verified
// pages go from the fetched frames to the kernel without a copy into an
// output buffer.
func writePages(f *os.File, off int64, pages [][]byte, sc *writeScratch) error {
	if len(pages) == 1 {
		_, err := f.WriteAt(pages[0], off)
		return err
	}
	if cap(sc.iov) < len(pages) {
		sc.iov = make([]syscall.Iovec, len(pages))
	}
	iov := sc.iov[:len(pages)]
	defer clear(sc.iov) // no pointers into fetch buffers kept
	for i, p := range pages {
		iov[i].Base = unsafe.SliceData(p)
		iov[i].SetLen(len(p))
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iov) > 0 {
		var n uintptr
		var errno syscall.Errno
		if cerr := rc.Write(func(fd uintptr) bool {
			n, _, errno = syscall.Syscall6(syscall.SYS_PWRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)),
				uintptr(off), uintptr(uint64(off)>>halfWord>>halfWord), 0)
			return errno != syscall.EAGAIN
		}); cerr != nil {
			return cerr
		}
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: errno}
		}
		if n == 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: io.ErrShortWrite}
		}
		// A short write: drop what was written and go on.
		off += int64(n)
		for n > 0 {
			if l := uintptr(iov[0].Len); n >= l {
				n -= l
				iov = iov[1:]
			} else {
				iov[0].Base = (*byte)(unsafe.Add(unsafe.Pointer(iov[0].Base), n))
				iov[0].SetLen(int(l - n))
				n = 0
			}
		}
	}
	runtime.KeepAlive(pages)
	return nil
}

// startWriteback asks the kernel to start writing back n bytes of f at
// off, and does not wait (sync_file_range with SYNC_FILE_RANGE_WRITE). It
// is a hint that lets write-back overlap the rest of a restore: the final
// fsync is what makes the file durable, and reports any write error, so a
// failed hint is ignored.
func startWriteback(f *os.File, off, n int64) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
		})
	}
}
