package caddymodule

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
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
	bb.release()
	bb.done() // the request ends later: nothing more to do
	if bb.b != nil {
		t.Fatal("released buffer still referenced")
	}

	// Half-read: the reader keeps its slice, intact, after release and done.
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
	bb.release()
	bb.done()
	for range 4 {
		other := new(bodyBuf) // may reuse pooled buffers, never r's
		other.get(n)
		for i := range other.b {
			other.b[i] = 'y'
		}
		defer other.done()
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
		bb.done()
	}
}

// TestStreamDoesNotKeepBody: once a stream is committed nothing of the
// request keeps its body alive (not the handler's locals, not the scan of
// the body), so a long stream costs no body memory.
func TestStreamDoesNotKeepBody(t *testing.T) {
	h := &Handler{DisableClientAuth: true, MaxBody: 1 << 20, clk: clock.NewFake(clockT0), logger: zap.NewNop(),
		secrets: []keySecret{{value: "sk-test-body"}}}
	st := keypool.NewState(h.clk)
	p, err := st.NewPool(keypool.Config{Keys: []keypool.KeyConfig{{Name: "k"}}})
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
