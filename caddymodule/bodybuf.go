package caddymodule

import (
	"io"
	"math/bits"
	"sync"
	"sync/atomic"
)

// bodyBuf is a request body kept for replay on another key. Its buffer goes
// back to a pool when the request ends, if every reader handed out reached
// the end (a reader still in the transport's hands may yet read it), or is
// dropped as soon as a response is committed to a stream, so that a long
// stream does not keep the body alive.
type bodyBuf struct {
	b     []byte
	class int // pool class, -1 when not pooled
	open  atomic.Int32
	gone  bool // released: no replay can follow
}

const (
	minBodyClass = 15 // 32 KiB: smaller bodies are allocated to size
	maxBodyClass = 22 // 4 MiB
)

var bodyPools [maxBodyClass + 1]sync.Pool

func getBodyBuf(n int) *bodyBuf {
	c := bits.Len(uint(n - 1))
	if c < minBodyClass || c > maxBodyClass {
		return &bodyBuf{b: make([]byte, n), class: -1}
	}
	if v, ok := bodyPools[c].Get().(*[]byte); ok {
		return &bodyBuf{b: (*v)[:n], class: c}
	}
	return &bodyBuf{b: make([]byte, n, 1<<c), class: c}
}

func (bb *bodyBuf) free() {
	if bb.class >= 0 && bb.b != nil {
		b := bb.b[:0]
		bodyPools[bb.class].Put(&b)
	}
	bb.b = nil
}

// release drops the buffer: no attempt will replay it. Readers still
// reading keep their own reference until they reach the end.
func (bb *bodyBuf) release() {
	bb.gone = true
	bb.b = nil
}

// done ends the request: the buffer goes back to the pool when no reader
// can touch it any more.
func (bb *bodyBuf) done() {
	if bb == nil || bb.gone {
		return
	}
	if bb.open.Load() == 0 {
		bb.free()
	}
	bb.b = nil
}

func (bb *bodyBuf) reader() io.ReadCloser {
	if len(bb.b) == 0 {
		return noBody{}
	}
	bb.open.Add(1)
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
