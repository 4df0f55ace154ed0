// Package jsonedit rewrites the top level of a JSON object without decoding
// its values: members are dropped or prepended and every other byte of the
// body is kept as the client sent it. Provider request translation needs
// exactly that (drop "model" and "stream", add "anthropic_version"), and a
// full decode and re-encode of a large Messages body would cost far more
// and reorder what the client wrote.
package jsonedit

import (
	"errors"
)

// ErrNotObject is returned for a body that is not one JSON object.
var ErrNotObject = errors.New("request body is not a JSON object")

// Member is one top-level member: Key is the raw key without its quotes
// (escapes left as written), Value the raw value.
type Member struct {
	Key   []byte
	Value []byte
}

// Each calls fn for every top-level member of the object in body, in order,
// and stops early when fn returns false.
func Each(body []byte, fn func(m Member) bool) error {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return ErrNotObject
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		if skipSpace(body, i+1) != len(body) {
			return ErrNotObject
		}
		return nil
	}
	for {
		if i >= len(body) || body[i] != '"' {
			return ErrNotObject
		}
		ke, ok := skipString(body, i)
		if !ok {
			return ErrNotObject
		}
		key := body[i+1 : ke-1]
		i = skipSpace(body, ke)
		if i >= len(body) || body[i] != ':' {
			return ErrNotObject
		}
		i = skipSpace(body, i+1)
		ve, ok := skipValue(body, i)
		if !ok {
			return ErrNotObject
		}
		if !fn(Member{Key: key, Value: body[i:ve]}) {
			return nil
		}
		i = skipSpace(body, ve)
		if i >= len(body) {
			return ErrNotObject
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			if skipSpace(body, i+1) != len(body) {
				return ErrNotObject
			}
			return nil
		default:
			return ErrNotObject
		}
	}
}

// Get returns the raw value of the top-level member key, if present.
func Get(body []byte, key string) ([]byte, bool) {
	var v []byte
	found := false
	_ = Each(body, func(m Member) bool {
		if string(m.Key) == key {
			v, found = m.Value, true
			return false
		}
		return true
	})
	return v, found
}

// Rewrite appends to dst the object in body with the members whose key is
// in drop left out and the raw members in add (each `"key":value`) put
// first. A member of body whose key is also added is dropped, so the result
// never holds a key twice.
func Rewrite(dst, body []byte, drop []string, add ...[]byte) ([]byte, error) {
	if err := Each(body, func(Member) bool { return true }); err != nil {
		return dst, err
	}
	dst = append(dst, '{')
	n := 0
	for _, a := range add {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, a...)
		n++
	}
	_ = Each(body, func(m Member) bool {
		if contains(drop, m.Key) || addedKey(add, m.Key) {
			return true
		}
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = append(dst, m.Key...)
		dst = append(dst, '"', ':')
		dst = append(dst, m.Value...)
		n++
		return true
	})
	return append(dst, '}'), nil
}

func contains(list []string, key []byte) bool {
	for _, s := range list {
		if s == string(key) {
			return true
		}
	}
	return false
}

// addedKey reports whether one of the raw members in add has key.
func addedKey(add [][]byte, key []byte) bool {
	for _, a := range add {
		if len(a) >= len(key)+2 && a[0] == '"' && string(a[1:1+len(key)]) == string(key) && a[1+len(key)] == '"' {
			return true
		}
	}
	return false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// skipValue returns the index after the value starting at b[i]. Nested
// values are matched bracket by bracket; scalars run to the next
// delimiter. It checks structure, not every literal: the upstream
// validates the JSON it receives.
func skipValue(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, ok := skipString(b, j)
				if !ok {
					return 0, false
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\n' && b[j] != '\r' && b[j] != '\t' {
			j++
		}
		if j == i {
			return 0, false
		}
		return j, true
	}
}

// AppendString appends s to b as a JSON string literal: quotes and
// backslashes escaped, control bytes as \u00XX, everything else as is
// (the values it serves — model ids, beta names — are plain ASCII).
func AppendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
