package harness

import (
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// disableFsync makes fsync(2) and fdatasync(2) return success at once,
// without running, in every thread of this process and its children: a
// seccomp filter answering those two calls with "error 0". It is an
// experiment's switch (BOP_BENCH_NOFSYNC=1), never a way to run bop: it
// tells how much of a variant's CPU and wall time its fsyncs cost, the
// device's interrupts included, by running the same children without them.
func disableFsync() error {
	const (
		offNr   = 0 // seccomp_data.nr
		offArch = 4 // seccomp_data.arch
	)
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("harness: BOP_BENCH_NOFSYNC: not supported on %s", runtime.GOARCH)
	}
	filter := []unix.SockFilter{
		// Another architecture's numbers mean other calls: allowed as is.
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offArch},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: arch},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: offNr},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 2, Jf: 0, K: unix.SYS_FSYNC},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 1, Jf: 0, K: unix.SYS_FDATASYNC},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO}, // errno 0: success
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("harness: BOP_BENCH_NOFSYNC: no_new_privs: %w", err)
	}
	// TSYNC: every thread of the process, not only the calling one.
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		return fmt.Errorf("harness: BOP_BENCH_NOFSYNC: seccomp: %w", errno)
	}
	return nil
}
