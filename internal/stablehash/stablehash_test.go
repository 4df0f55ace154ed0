package stablehash

import "testing"

// TestSum64IsFixed pins the hash of one input. Relay instances sharing a
// pool name a conversation's pin by this hash, so it must be the same in
// every process and every release: a per-process seed fails this test.
func TestSum64IsFixed(t *testing.T) {
	var h Hash
	h.Reset()
	h.WriteString("alice")
	_ = h.WriteByte(0)
	h.WriteString("session-1")
	const want = 0x3f5fee7eb69531b0
	if got := h.Sum64(); got != want {
		t.Errorf("Sum64 = %#x, want %#x", got, want)
	}
}

// TestWritesAreConcatenated checks that the input is the bytes written, in
// order, however they were split.
func TestWritesAreConcatenated(t *testing.T) {
	var one, parts Hash
	one.Reset()
	one.Write([]byte("ab\x00\x01\x02\x03\x04\x05\x06\x07\x08c"))
	parts.Reset()
	parts.WriteString("a")
	_ = parts.WriteByte('b')
	_ = parts.WriteByte(0)
	parts.WriteUint64(0x0807060504030201)
	parts.Write([]byte("c"))
	if one.Sum64() != parts.Sum64() {
		t.Errorf("split writes hash %#x, one write %#x", parts.Sum64(), one.Sum64())
	}
	var other Hash
	other.Reset()
	other.WriteString("ab")
	if other.Sum64() == one.Sum64() {
		t.Error("different inputs hash equal")
	}
}
