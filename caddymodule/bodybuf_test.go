package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"
	"weak"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// TestBodyClass: every pooled size gets a buffer that holds it with at most
// 25% to spare, and a class always hands out buffers of one capacity.
func TestBodyClass(t *testing.T) {
	sizeOf := map[int]int{}
	for n := 1; n <= maxPooledBody+1; n += 1 + n/97 {
		c, size := bodyClass(n)
		if n <= minPooledBody || n > maxPooledBody {
			if c != -1 || size != n {
				t.Fatalf("n=%d: class %d size %d, want unpooled", n, c, size)
			}
			continue
		}
		if c < 0 || c >= len(bodyPools) {
			t.Fatalf("n=%d: class %d out of range", n, c)
		}
		if size < n || size > n+n/4 {
			t.Fatalf("n=%d: size %d", n, size)
		}
		if prev, ok := sizeOf[c]; ok && prev != size {
			t.Fatalf("class %d: sizes %d and %d", c, prev, size)
		}
		sizeOf[c] = size
	}
	if len(sizeOf) != len(bodyPools) {
		t.Fatalf("%d classes used, %d pools", len(sizeOf), len(bodyPools))
	}
}

// TestBodyBufRelease: a committed stream's body goes back to its pool only
// when no reader can still read it, so a reader in the transport's hands
// never sees a recycled buffer.
func TestBodyBufRelease(t *testing.T) {
	const n = 4175
	readAll := func(bb *bodyBuf) {
		if b, err := io.ReadAll(bb.reader()); err != nil || len(b) != n {
			t.Fatalf("read %d bytes, %v", len(b), err)
		}
	}

	bb := new(bodyBuf)
	bb.get(n)
	readAll(bb)
	if bb.open.Load() != 0 {
		t.Fatalf("open readers %d after EOF", bb.open.Load())
	}
	bb.endReplays()
	bb.endRequest() // the request ends later: nothing more to do
	if bb.b != nil {
		t.Fatal("released buffer still referenced")
	}

	// Half-read: the reader keeps its slice, intact, after endReplays and endRequest.
	bb = new(bodyBuf)
	bb.get(n)
	for i := range bb.b {
		bb.b[i] = 'x'
	}
	r := bb.reader()
	head := make([]byte, 100)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	bb.endReplays()
	bb.endRequest()
	for range 4 {
		other := new(bodyBuf) // may reuse pooled buffers, never r's
		other.get(n)
		for i := range other.b {
			other.b[i] = 'y'
		}
		defer other.endRequest()
	}
	rest, err := io.ReadAll(r)
	if err != nil || len(rest) != n-100 {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
	for i, c := range rest {
		if c != 'x' {
			t.Fatalf("byte %d of the in-flight body was overwritten: %q", 100+i, c)
		}
	}
}

// BenchmarkBodyBuf: a 4 KB body taken, read once and given back allocates
// nothing but the descriptor (which the relay allocates with the rest of
// the request's state).
func BenchmarkBodyBuf(b *testing.B) {
	b.ReportAllocs()
	p := make([]byte, 32<<10)
	for b.Loop() {
		var bb bodyBuf
		bb.get(4175)
		r := bb.reader()
		for {
			if _, err := r.Read(p); err != nil {
				break
			}
		}
		bb.endRequest()
	}
}

// TestStreamDoesNotKeepBody: once a stream is committed nothing of the
// request keeps its body alive (not the handler's locals, not the scan of
// the body), so a long stream costs no body memory.
func TestStreamDoesNotKeepBody(t *testing.T) {
	h := &Handler{DisableClientAuth: true, MaxBody: 1 << 20, clk: clock.NewFake(clockT0), logger: zap.NewNop(),
		secrets: []keySecret{{value: "sk-test-body"}}}
	st := keypool.NewState(h.clk)
	p, err := st.NewPool(keypool.Config{Keys: []keypool.KeyConfig{{Name: "k"}}, TokenEstimateRatio: 4, DefaultCooldown: time.Second, SpendCapPark: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	h.pool = p
	// No session id: the relay falls back to hashing the conversation's
	// start, which reads the body through the scan's result.
	body := `{"model":"claude-sonnet-4-5","max_tokens":10,"stream":true,"system":"` + strings.Repeat("s", 8<<10) +
		`","messages":[{"role":"user","content":"hi"}]}`
	var collected bool
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		rr, ok := r.Body.(*replayReader)
		if !ok || len(rr.b) == 0 {
			t.Fatalf("upstream body %T", r.Body)
		}
		wp := weak.Make(&rr.b[0])
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			t.Fatal(err)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		// Twice: a buffer given back to its pool survives one collection.
		runtime.GC()
		runtime.GC()
		collected = wp.Value() == nil
		_, err := io.WriteString(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
		return err
	})
	req := httptest.NewRequest("POST", "/v1/messages", strings.NewReader(body))
	if err := h.ServeHTTP(httptest.NewRecorder(), req, next); err != nil {
		t.Fatal(err)
	}
	if !collected {
		t.Fatal("the request body was still reachable while the stream was open")
	}
}

// stallingBody sends head, then blocks until release is closed and fails,
// as a client that declared a large body and went quiet would.
type stallingBody struct {
	head    []byte
	stalled chan<- struct{}
	release <-chan struct{}
}

func (s *stallingBody) Read(p []byte) (int, error) {
	if len(s.head) > 0 {
		n := copy(p, s.head)
		s.head = s.head[n:]
		return n, nil
	}
	s.stalled <- struct{}{}
	<-s.release
	return 0, io.ErrUnexpectedEOF
}
func (s *stallingBody) Close() error { return nil }

// TestSlowClientsHoldLittleMemory: 40 clients that each declare a 32 MiB
// body and send 5 bytes make the relay allocate what arrived (a first
// chunk each), not what was declared: 40 × 32 MiB would be 1.3 GB.
func TestSlowClientsHoldLittleMemory(t *testing.T) {
	h := &Handler{MaxBody: defaultMaxBody, logger: zap.NewNop()}
	const clients = 40
	stalled, release := make(chan struct{}), make(chan struct{})
	done := make(chan int, clients)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range clients {
		r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
		r.Body = &stallingBody{head: []byte(`{"mod`), stalled: stalled, release: release}
		r.ContentLength = 32 << 20
		go func() {
			var bb bodyBuf
			status, _, _ := h.readBody(httptest.NewRecorder(), r, &bb)
			done <- status
		}()
	}
	for range clients {
		<-stalled // every client's 5 bytes are in; each now waits for more
	}
	runtime.ReadMemStats(&after)
	close(release)
	for range clients {
		if status := <-done; status != http.StatusBadRequest {
			t.Fatalf("a client whose body broke off got %d, want 400", status)
		}
	}
	const bound = clients * 2 * firstBodyChunk // generous: goroutines, requests
	if got := after.TotalAlloc - before.TotalAlloc; got > bound {
		t.Fatalf("%d slow clients allocated %d bytes, want at most %d", clients, got, bound)
	}
}

// TestBodyFillGrows: bodies of every size, declared or chunked, arrive
// whole through a reader that hands out a few bytes at a time; a chunked
// body over the limit is seen after limit+1 bytes.
func TestBodyFillGrows(t *testing.T) {
	for _, n := range []int{1, 1000, firstBodyChunk - 1, firstBodyChunk, firstBodyChunk + 1, 300_000, 5 << 20} {
		body := strings.Repeat("x", n-1) + "y"
		for _, declared := range []int64{int64(n), -1} {
			var bb bodyBuf
			tooBig, err := bb.fill(io.LimitReader(strings.NewReader(body), int64(n)), declared, 8<<20)
			if err != nil || tooBig || string(bb.b) != body {
				t.Fatalf("n=%d declared=%d: tooBig %v err %v, got %d bytes", n, declared, tooBig, err, len(bb.b))
			}
			if cap(bb.b) > max(2*n, firstBodyChunk) && cap(bb.b) > n+n/4 {
				t.Fatalf("n=%d declared=%d: buffer of %d bytes", n, declared, cap(bb.b))
			}
			bb.endRequest()
		}
	}
	var bb bodyBuf
	r := &countingReader{r: strings.NewReader(strings.Repeat("x", 1<<20))}
	if tooBig, err := bb.fill(r, -1, 1000); !tooBig || err != nil || r.n > 1001+firstBodyChunk {
		t.Fatalf("chunked body over the limit: tooBig %v err %v, read %d bytes", tooBig, err, r.n)
	}
	var short bodyBuf
	if _, err := short.fill(strings.NewReader("abc"), 10, 1000); err == nil {
		t.Fatalf("a body shorter than its Content-Length was accepted")
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
