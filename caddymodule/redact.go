package caddymodule

import (
	"bytes"
	"slices"
	"unicode/utf8"
)

// minSecretFragment is the shortest piece of a secret that is hidden on its
// own: an upstream that echoes part of a key (a prefix, a suffix, a window
// cut at a length limit) must not reveal any 12 bytes of it. Shorter pieces
// say too little to matter and would hide ordinary text.
const minSecretFragment = 12

// minShortSecret is the shortest secret that is hidden whole when it is too
// short to have fragments: hiding every "ab" in a text would hide nothing
// useful and mangle the text.
const minShortSecret = 4

// redacted replaces what is hidden.
const redacted = "[redacted]"

// redactor hides the relay's configured secrets (upstream keys and client
// tokens) in text the relay builds from what the upstream sent: reasons,
// log fields, admin output, replayed error bodies. Any run of 12 or more
// bytes that occurs in a secret is hidden, so a secret never shows in
// part, whether it was echoed whole, cut before its end or from its middle.
type redactor struct {
	grams map[string]struct{} // every minSecretFragment-byte substring of a long secret
	short [][]byte            // secrets too short for fragments, hidden whole
}

func newRedactor(secrets []string) *redactor {
	r := &redactor{grams: map[string]struct{}{}}
	for _, s := range secrets {
		if len(s) < minSecretFragment {
			if len(s) >= minShortSecret {
				r.short = append(r.short, []byte(s))
			}
			continue
		}
		// The substrings share the secret's memory: no allocation each.
		for i := 0; i+minSecretFragment <= len(s); i++ {
			r.grams[s[i:i+minSecretFragment]] = struct{}{}
		}
	}
	return r
}

// spans returns the sorted, merged byte ranges of b that hold a secret or
// a fragment of one.
func (r *redactor) spans(b []byte) [][2]int {
	var out [][2]int
	add := func(from, to int) {
		if n := len(out); n > 0 && out[n-1][1] >= from {
			out[n-1][1] = max(out[n-1][1], to)
			return
		}
		out = append(out, [2]int{from, to})
	}
	if len(r.grams) > 0 {
		for i := 0; i+minSecretFragment <= len(b); i++ {
			// string(b[i:j]) in a map index does not allocate.
			if _, ok := r.grams[string(b[i:i+minSecretFragment])]; ok {
				add(i, i+minSecretFragment)
			}
		}
	}
	if len(r.short) == 0 {
		return out
	}
	for _, s := range r.short {
		for off := 0; ; {
			i := bytes.Index(b[off:], s)
			if i < 0 {
				break
			}
			out = append(out, [2]int{off + i, off + i + len(s)})
			off += i + len(s)
		}
	}
	slices.SortFunc(out, func(a, b [2]int) int { return a[0] - b[0] })
	merged := out[:0]
	for _, sp := range out {
		if n := len(merged); n > 0 && merged[n-1][1] >= sp[0] {
			merged[n-1][1] = max(merged[n-1][1], sp[1])
			continue
		}
		merged = append(merged, sp)
	}
	return merged
}

// Bytes returns b with every secret and fragment replaced; b itself when
// there is none.
func (r *redactor) Bytes(b []byte) []byte {
	if r == nil {
		return b
	}
	sp := r.spans(b)
	if len(sp) == 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	prev := 0
	for _, s := range sp {
		out = append(out, b[prev:s[0]]...)
		out = append(out, redacted...)
		prev = s[1]
	}
	return append(out, b[prev:]...)
}

// String is Bytes for a string.
func (r *redactor) String(s string) string {
	if r == nil || len(s) < minShortSecret {
		return s
	}
	return string(r.Bytes([]byte(s)))
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
// Text is redacted before it is cut, never after: a cut secret no longer
// matches itself.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
