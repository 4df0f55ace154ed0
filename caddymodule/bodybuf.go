package caddymodule

import (
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
)

// bodyBuf is a request body kept for replay on another key. Its buffer goes
// back to its pool (returnToPool) when the request ends (endRequest) or as
// soon as a response is committed to a stream (endReplays, so that a long
// stream does not keep the body alive), if every reader handed out reached
// the end; a reader still in the transport's hands may yet read it, and then
// the buffer is left to the garbage collector.
type bodyBuf struct {
	b            []byte
	class        int     // pool class, or unpooled
	ptr          *[]byte // what goes back to the pool, kept to save its allocation
	open         atomic.Int32
	replaysEnded bool // endReplays ran: no replay can follow

	first     replayReader // the first attempt's reader, to save its allocation
	firstUsed bool
}

// unpooled is the class of a body allocated to size, outside the pools.
const unpooled = -1

// Body buffers come from sync.Pools in size classes of four per power of
// two (at most 25% unused), so that a request's body costs no allocation
// and a burst of requests reuses the buffers that committed streams let go.
// Bodies of up to 1 KiB are allocated to size: pooling saves little there.
// Above 4 MiB a body is rare enough to be allocated, and not kept around.
const (
	minPooledBody = 1 << 10
	maxPooledBody = 4 << 20
	firstClassExp = 11 // bodies of 1 KiB + 1 to 2 KiB
)

// classesPerDoubling is how many size classes share one power of two.
const classesPerDoubling = 4

// lastClassExp is the power of two of the largest pooled body.
const lastClassExp = 22 // maxPooledBody: 4 MiB

var bodyPools [(lastClassExp - firstClassExp + 1) * classesPerDoubling]sync.Pool

// bodyClass returns the pool class of an n-byte body and the capacity of
// its buffers, or unpooled for a body allocated to size.
func bodyClass(n int) (class, size int) {
	if n <= minPooledBody || n > maxPooledBody {
		return unpooled, n
	}
	e := bits.Len(uint(n - 1)) // 2^(e-1) < n <= 2^e
	step := (1 << (e - 1)) / classesPerDoubling
	size = (n + step - 1) &^ (step - 1) // 5 to 8 steps
	return (e-firstClassExp)*classesPerDoubling + size/step - (classesPerDoubling + 1), size
}

// get makes bb an n-byte buffer.
func (bb *bodyBuf) get(n int) {
	c, size := bodyClass(n)
	bb.class = c
	if c == unpooled {
		bb.b = make([]byte, n)
		return
	}
	if v, ok := bodyPools[c].Get().(*[]byte); ok {
		bb.ptr, bb.b = v, (*v)[:n]
		return
	}
	bb.ptr, bb.b = new([]byte), make([]byte, n, size)
}

// firstBodyChunk is the most a body's buffer holds before its bytes
// arrive: a declared length only says how far the buffer may grow.
const firstBodyChunk = 64 << 10

// fill reads r to its end into bb. declared is the body's Content-Length
// (-1 when unknown); a body longer than limit is reported as tooBig after
// reading at most limit+1 bytes. The buffer starts at no more than
// firstBodyChunk and doubles only when full, so it never holds much more
// than twice the bytes received: a client that declares 32 MiB and sends
// five bytes costs 64 KiB, not 32 MiB. Buffers come from the size-class
// pools, and one that is outgrown goes back at once. On an error the
// buffer goes back to its pool.
func (bb *bodyBuf) fill(r io.Reader, declared, limit int64) (tooBig bool, err error) {
	end := limit + 1 // read one byte past the limit to see a body over it
	if declared >= 0 {
		end = declared // net/http ends the body there
	}
	if end == 0 {
		return false, nil
	}
	bb.get(int(min(end, firstBodyChunk)))
	n := 0
	for {
		if n == len(bb.b) {
			if int64(n) >= end {
				break
			}
			bb.regrow(int(min(end, int64(2*n))), n)
		}
		m, rerr := r.Read(bb.b[n:])
		n += m
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			bb.returnToPool()
			return false, rerr
		}
	}
	if declared >= 0 && int64(n) < declared {
		bb.returnToPool()
		return false, io.ErrUnexpectedEOF
	}
	bb.b = bb.b[:n]
	return int64(n) > limit, nil
}

// regrow moves the first n bytes of bb into a buffer of size bytes and
// gives the old one back to its pool.
func (bb *bodyBuf) regrow(size, n int) {
	old, oldClass, oldPtr := bb.b, bb.class, bb.ptr
	bb.get(size)
	copy(bb.b, old[:n])
	if oldClass != unpooled {
		*oldPtr = old[:0]
		bodyPools[oldClass].Put(oldPtr)
	}
}

// returnToPool gives the buffer back to its size class's pool now, and
// forgets it. Only for a buffer no reader can touch.
func (bb *bodyBuf) returnToPool() {
	if bb.class != unpooled && bb.b != nil {
		*bb.ptr = bb.b[:0]
		bodyPools[bb.class].Put(bb.ptr)
	}
	bb.b, bb.ptr = nil, nil
}

// endReplays lets go of the buffer once a response is committed to a
// stream: no attempt will replay it. It goes back to its pool at once if no
// reader can touch it any more (the transport has sent the whole body, the
// usual case by the time a response arrives); otherwise readers still
// reading keep their own reference until they reach the end, and the
// buffer is left to the garbage collector.
func (bb *bodyBuf) endReplays() {
	bb.replaysEnded = true
	if bb.open.Load() == 0 {
		bb.returnToPool()
	}
	bb.b = nil
}

// endRequest lets go of the buffer when the request ends, unless
// endReplays already did: it goes back to its pool when no reader can touch
// it any more, else it is left to the garbage collector.
func (bb *bodyBuf) endRequest() {
	if bb == nil || bb.replaysEnded {
		return
	}
	if bb.open.Load() == 0 {
		bb.returnToPool()
	}
	bb.b = nil
}

func (bb *bodyBuf) reader() io.ReadCloser {
	if len(bb.b) == 0 {
		return noBody{}
	}
	bb.open.Add(1)
	if !bb.firstUsed {
		bb.firstUsed = true
		bb.first = replayReader{bb: bb, b: bb.b}
		return &bb.first
	}
	return &replayReader{bb: bb, b: bb.b}
}

func (bb *bodyBuf) getBody() (io.ReadCloser, error) { return bb.reader(), nil }

type noBody struct{}

func (noBody) Read([]byte) (int, error) { return 0, io.EOF }
func (noBody) Close() error             { return nil }

// replayReader reads one copy of the body; at the end it lets go of the
// buffer and tells its bodyBuf.
type replayReader struct {
	bb *bodyBuf
	b  []byte
}

func (r *replayReader) Read(p []byte) (int, error) {
	if r.b == nil {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		r.b = nil
		r.bb.open.Add(-1)
		return n, io.EOF
	}
	return n, nil
}

func (r *replayReader) WriteTo(w io.Writer) (int64, error) {
	if r.b == nil {
		return 0, nil
	}
	n, err := w.Write(r.b)
	r.b = r.b[n:]
	if len(r.b) == 0 {
		r.b = nil
		r.bb.open.Add(-1)
	}
	return int64(n), err
}

func (r *replayReader) Close() error { return nil }
