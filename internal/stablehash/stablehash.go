// Package stablehash is the 64-bit hash that names a conversation: the same
// in every process, so that relay instances sharing a pool find each other's
// session pins.
//
// hash/maphash, used before, is seeded per process and cannot be given a
// fixed seed, so every instance named the same conversation differently and
// a conversation that moved to another instance lost its key (and its prompt
// cache); docs/perf/cluster.md has the measurement. xxhash (already in the
// build through Prometheus' client) is stable and a little faster here
// (reqscan's BenchmarkPrefixHash: 3.5 µs against 4.0 µs for 42 KB).
//
// The hash is not keyed with a secret. A client could craft two of its own
// session ids that collide, which only shares one key between them; every
// session hash starts with the client's name, so it cannot reach another
// client's conversations without also knowing their session ids, and then it
// gains only their key choice.
package stablehash

import "github.com/cespare/xxhash/v2"

// seed is fixed for all time: changing it renames every session in a shared
// store, and instances running different versions would stop agreeing.
const seed = 0x63632d72656c6179 // "cc-relay"

// Hash is an incremental hash. The zero value is not usable: call Reset.
type Hash struct {
	d xxhash.Digest
}

// Reset prepares h for a new input.
func (h *Hash) Reset() { h.d.ResetWithSeed(seed) }

// Write adds b to the input. It never fails.
func (h *Hash) Write(b []byte) { _, _ = h.d.Write(b) }

// WriteString adds s to the input.
func (h *Hash) WriteString(s string) { _, _ = h.d.WriteString(s) }

// WriteByte adds c to the input. It never fails; the error is there for
// io.ByteWriter's signature.
func (h *Hash) WriteByte(c byte) error {
	b := [1]byte{c}
	_, _ = h.d.Write(b[:])
	return nil
}

// WriteUint64 adds v to the input, little-endian.
func (h *Hash) WriteUint64(v uint64) {
	var b [8]byte
	for i := range b {
		b[i] = byte(v >> (8 * i))
	}
	_, _ = h.d.Write(b[:])
}

// Sum64 returns the hash of the input so far.
func (h *Hash) Sum64() uint64 { return h.d.Sum64() }
