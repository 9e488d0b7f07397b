//go:build wasip1

// Command cue-guest is the Pequod CUE evaluator, built as a wasip1 reactor
// (-buildmode=c-shared). The host calls _initialize once, then uses the
// exports below. See README.md for the protocol.
package main

import (
	"fmt"
	"unsafe"
)

// live keeps every buffer handed to the host reachable until dealloc, so the
// garbage collector (which does not move objects) never frees it.
var live = map[uint32][]byte{}

func allocBuf(size uint32) []byte {
	n := size
	if n == 0 {
		n = 1 // a distinct, non-zero pointer even for empty buffers
	}
	buf := make([]byte, n)
	live[ptrOf(buf)] = buf
	return buf[:size]
}

func ptrOf(buf []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(buf))))
}

// alloc returns a pointer to size bytes of guest memory that stays valid
// until dealloc(ptr).
//
//go:wasmexport alloc
func alloc(size uint32) uint32 {
	return ptrOf(allocBuf(size))
}

// dealloc releases a buffer returned by alloc or eval. Unknown pointers are
// ignored.
//
//go:wasmexport dealloc
func dealloc(ptr uint32) {
	delete(live, ptr)
}

// eval reads a JSON request of len bytes at ptr (a buffer from alloc) and
// returns (respPtr << 32) | respLen of a JSON response buffer, which the host
// must release with dealloc(respPtr).
//
//go:wasmexport eval
func eval(ptr uint32, length uint32) (ret uint64) {
	defer func() {
		if r := recover(); r != nil {
			ret = respond(marshalResponse(nil, []Error{{
				Phase:   PhaseEval,
				Message: fmt.Sprintf("guest panic: %v", r),
			}}))
		}
	}()
	buf, ok := live[ptr]
	if !ok || uint64(length) > uint64(cap(buf)) {
		return respond(marshalResponse(nil, inputError("",
			"request buffer (ptr=%d, len=%d) was not allocated with alloc or is too short", ptr, length)))
	}
	return respond(Evaluate(buf[:length:length]))
}

func respond(resp []byte) uint64 {
	buf := allocBuf(uint32(len(resp)))
	copy(buf, resp)
	return uint64(ptrOf(buf))<<32 | uint64(len(resp))
}

// main is not run in a c-shared (reactor) module, but package main needs it.
func main() {}
