package proto

import (
	"bytes"
	"encoding/binary"
	"runtime/metrics"
	"testing"
)

// heapAllocs reads the bytes allocated on the heap so far, without
// stopping the world.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// FuzzReadFrame reads frames from arbitrary bytes until the first error.
// ReadFrame must never panic, must stop at a length above MaxFrame without
// allocating it, and must never allocate more than MaxFrame for a frame
// plus what decoding the bytes actually present costs.
func FuzzReadFrame(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x19{\"id\":1,\"method\":\"hello\"}"))
	f.Add([]byte("\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decoding allocates some multiple of the input; a frame's buffer
		// is at most MaxFrame on top of that.
		slack := uint64(1<<20 + 64*len(data))
		r := bytes.NewReader(data)
		for i := 0; ; i++ {
			var n uint32
			if r.Len() >= 4 {
				n = binary.BigEndian.Uint32(data[len(data)-r.Len():])
			}
			before := heapAllocs()
			var req Request
			err := ReadFrame(r, &req)
			got := heapAllocs() - before
			limit := slack + MaxFrame
			if n > MaxFrame {
				limit = slack
				if err == nil {
					t.Fatalf("frame %d of %d bytes read without error", i, n)
				}
			}
			if got > limit {
				t.Fatalf("frame %d (length %d of %d input bytes) allocated %d bytes, limit %d", i, n, len(data), got, limit)
			}
			if err != nil {
				return
			}
		}
	})
}
