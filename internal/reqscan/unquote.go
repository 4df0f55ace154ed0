package reqscan

import (
	"bytes"
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

var errEscape = errors.New("invalid escape in string")

// needsUnquote reports whether the contents of a JSON string, without its
// quotes, differ from their decoded value: they contain an escape, or
// invalid UTF-8 that decoding replaces with U+FFFD.
func needsUnquote(raw []byte) bool {
	for i, c := range raw {
		if c == '\\' {
			return true
		}
		if c >= utf8.RuneSelf {
			// The rest is checked in bulk; the backslash check must
			// still cover it.
			rest := raw[i:]
			return !utf8.Valid(rest) || bytes.IndexByte(rest, '\\') >= 0
		}
	}
	return false
}

// unquote decodes the contents of a JSON string, without its quotes, with
// the same result as encoding/json: escapes are decoded, a \u escape that is
// an unpaired surrogate and each byte of invalid UTF-8 become U+FFFD.
// Control characters are passed through rather than rejected.
//
// It allocates only the returned string.
func unquote(raw []byte) (string, error) {
	if !needsUnquote(raw) {
		return string(raw), nil
	}
	var b strings.Builder
	// Decoding never lengthens the text except where a single invalid
	// byte becomes a three-byte U+FFFD, which real clients never send.
	b.Grow(len(raw))
	for i := 0; i < len(raw); {
		// Copy the run of bytes that decode to themselves in one go.
		j := i
		for j < len(raw) && raw[j] != '\\' && raw[j] < utf8.RuneSelf {
			j++
		}
		b.Write(raw[i:j])
		if i = j; i == len(raw) {
			break
		}
		c := raw[i]
		switch {
		case c == '\\':
			if i+1 >= len(raw) {
				return "", errEscape
			}
			switch e := raw[i+1]; e {
			case '"', '\\', '/':
				b.WriteByte(e)
				i += 2
			case 'b':
				b.WriteByte('\b')
				i += 2
			case 'f':
				b.WriteByte('\f')
				i += 2
			case 'n':
				b.WriteByte('\n')
				i += 2
			case 'r':
				b.WriteByte('\r')
				i += 2
			case 't':
				b.WriteByte('\t')
				i += 2
			case 'u':
				r := hex4(raw[i:])
				if r < 0 {
					return "", errEscape
				}
				i += 6
				if utf16.IsSurrogate(r) {
					// A high surrogate combines with a following \u low
					// surrogate; anything else leaves it unpaired.
					if dec := utf16.DecodeRune(r, hex4(raw[i:])); dec != utf8.RuneError {
						b.WriteRune(dec)
						i += 6
						break
					}
					r = utf8.RuneError
				}
				b.WriteRune(r)
			default:
				return "", errEscape
			}
		default:
			r, size := utf8.DecodeRune(raw[i:])
			if r == utf8.RuneError && size == 1 {
				b.WriteRune(utf8.RuneError)
			} else {
				b.Write(raw[i : i+size])
			}
			i += size
		}
	}
	return b.String(), nil
}

// hex4 decodes the \uXXXX escape at the start of s, returning -1 if s does
// not start with one.
func hex4(s []byte) rune {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return -1
	}
	var r rune
	for _, c := range s[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}
