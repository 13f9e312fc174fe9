package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// sigRTMin is signal 34, the first real-time signal as glibc numbers them.
// Go's runtime reserves it (musl's SIGSYNCCALL) and installs no handler,
// so even signal.Notify cannot keep it from ending the process. sockd
// ignores it with a plain rt_sigaction(2); pool.Trampoline gives it back
// its default action before a worker is exec'd.
const sigRTMin = 34

// ignoreSignal34 sets signal 34's disposition to SIG_IGN.
func ignoreSignal34() error {
	var sa struct {
		handler, flags, restorer uintptr
		mask                     uint64
	}
	sa.handler = 1 // SIG_IGN
	_, _, errno := unix.RawSyscall6(unix.SYS_RT_SIGACTION, sigRTMin, uintptr(unsafe.Pointer(&sa)), 0, 8, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}
