package usage

import (
	"bytes"
	"encoding/json"
)

// maxCapture bounds the value of one top-level member that a JSONScanner
// copies. Usage and error objects are well under it. It is at most
// maxSmallBuf, so that the pooled buffer holding a value never outgrows
// the small buffers' pool.
const maxCapture = 4 << 10

var _ [maxSmallBuf - maxCapture]struct{} // maxCapture <= maxSmallBuf

// maxKey bounds the raw top-level key a JSONScanner keeps, quotes
// included: long enough for "usage" with every character escaped as \uXXXX.
const maxKey = 40

// JSONScanner scans a non-streaming Messages API response body, a message
// object or an error object, for usage. The zero value is ready to use.
//
// It reads three members of the top-level object: "usage", "model" and, in
// an error body, "error" (for its "type"). It tracks only nesting depth and
// string state and copies only those members' values, each up to 4 KiB (a
// longer value is ignored), so it uses constant memory for any body. A
// value is copied into a pooled buffer held only while the value is read,
// so a scanner between members, or done, holds no buffer (one whose body
// is cut off inside such a value leaves its buffer to the garbage
// collector). Each value read is decoded with encoding/json when it ends;
// the bytes around them are skipped without allocating.
//
// A body that is not a JSON object yields no usage, and scanning stops at
// the first syntax error it notices or at the end of the top-level object.
// A member value that is not valid JSON is ignored.
//
// Top-level keys match exactly, as map keys do in encoding/json; members
// inside the values match as encoding/json matches struct fields. A member
// given more than once takes its last value; the "usage" member replaces
// all the counts, and a count it lacks reads 0.
type JSONScanner struct {
	u Usage

	depth int  // nesting depth outside strings; the top-level object is 1
	str   bool // in a string
	esc   bool // in a string, after an unpaired backslash
	st    jsonState
	done  bool // stopped: the top-level value ended or was malformed

	key  [maxKey]byte // the current top-level key, raw
	keyN int          // its length; more than maxKey means no member we read

	member jsonMember // the top-level member whose value is being read
	buf    *[]byte    // that value so far, if it is being kept: a pooled buffer, or nil
	over   bool       // the value outgrew maxCapture
}

type jsonState uint8

const (
	jsonBefore jsonState = iota // before the top-level object
	jsonKey                     // expecting a key or '}'
	jsonInKey                   // in a key
	jsonColon                   // expecting ':'
	jsonValue                   // expecting a member value
	jsonScalar                  // in a number or literal member value
	jsonString                  // in a string member value
	jsonNested                  // in an object or array member value
	jsonComma                   // expecting ',' or '}'
)

type jsonMember uint8

const (
	memberOther jsonMember = iota
	memberUsage
	memberModel
	memberError
)

// Write consumes p, which continues the body from the previous Write. It
// never fails and never retains p. It returns true if the usage changed.
func (s *JSONScanner) Write(p []byte) (changed bool) {
	before := s.u
	for len(p) > 0 && !s.done {
		if s.str {
			n, closed := s.skipString(p)
			if s.st == jsonInKey {
				s.appendKey(p[:n])
			} else {
				s.capture(p[:n])
			}
			p = p[n:]
			if closed {
				s.str = false
				switch s.st {
				case jsonInKey:
					s.endKey()
					s.st = jsonColon
				case jsonString:
					s.endValue()
					s.st = jsonComma
				}
			}
			continue
		}
		if s.st == jsonNested {
			// Between strings, most bytes of a nested value are
			// punctuation and numbers that do not matter.
			i := 0
			for i < len(p) {
				if c := p[i]; c == '"' || c == '{' || c == '}' || c == '[' || c == ']' {
					break
				}
				i++
			}
			if i == len(p) {
				s.capture(p)
				break
			}
			s.capture(p[:i+1])
			c := p[i]
			p = p[i+1:]
			switch c {
			case '"':
				s.str = true
			case '{', '[':
				s.depth++
			default:
				if s.depth--; s.depth == 1 {
					s.endValue()
					s.st = jsonComma
				}
			}
			continue
		}

		c, one := p[0], p[:1]
		if s.st == jsonScalar {
			if c != ',' && c != '}' && !isSpace(c) {
				s.capture(one)
				p = p[1:]
				continue
			}
			// c ends the scalar and is read again as what follows it.
			s.endValue()
			s.st = jsonComma
		}
		p = p[1:]
		if isSpace(c) {
			continue
		}
		switch s.st {
		case jsonBefore:
			if c != '{' {
				s.done = true
				break
			}
			s.depth = 1
			s.st = jsonKey
		case jsonKey:
			if c != '"' {
				// '}' ends an empty object; anything else is malformed.
				s.done = true
				break
			}
			s.str = true
			s.key[0] = '"'
			s.keyN = 1
			s.st = jsonInKey
		case jsonColon:
			if c != ':' {
				s.done = true
				break
			}
			s.st = jsonValue
		case jsonValue:
			if c == ',' || c == '}' || c == ']' || c == ':' {
				s.done = true
				break
			}
			s.over = false
			s.capture(one)
			switch c {
			case '"':
				s.str = true
				s.st = jsonString
			case '{', '[':
				s.depth = 2
				s.st = jsonNested
			default:
				s.st = jsonScalar
			}
		case jsonComma:
			switch c {
			case ',':
				s.st = jsonKey
			default:
				// '}' ends the top-level object; anything else is
				// malformed.
				s.done = true
			}
		}
	}
	return s.u != before
}

// Usage returns the usage seen so far.
func (s *JSONScanner) Usage() Usage {
	return s.u
}

// skipString reads string contents from the start of p and returns how many
// bytes it read and whether they include the closing quote.
//
// It jumps from quote to quote with bytes.IndexByte and decides whether
// each quote is escaped by counting the backslashes before it. A backslash
// run can span Writes, so its parity is carried in s.esc.
func (s *JSONScanner) skipString(p []byte) (n int, closed bool) {
	i := 0
	if s.esc {
		// p[0] is escaped, whatever it is.
		s.esc = false
		i = 1
	}
	for {
		j := bytes.IndexByte(p[i:], '"')
		if j < 0 {
			// A run of backslashes at the end escapes the first byte of
			// the next Write if its length is odd. The run cannot extend
			// before i: p[i-1] is an escaped byte or an escaped quote.
			k := len(p)
			for k > i && p[k-1] == '\\' {
				k--
			}
			s.esc = (len(p)-k)%2 == 1
			return len(p), false
		}
		j += i
		k := j
		for k > i && p[k-1] == '\\' {
			k--
		}
		if (j-k)%2 == 0 {
			return j + 1, true
		}
		i = j + 1
	}
}

// appendKey adds raw key bytes to s.key, remembering the length beyond
// maxKey so that an over-long key matches nothing.
func (s *JSONScanner) appendKey(b []byte) {
	if s.keyN+len(b) <= maxKey {
		copy(s.key[s.keyN:], b)
	}
	s.keyN += len(b)
}

// topKeys are the top-level members a JSONScanner reads, in jsonMember
// order from memberUsage.
var topKeys = [...]string{"usage", "model", "error"}

// endKey decides from the complete key which member, if any, follows. Keys
// match exactly, as encoding/json matches map keys; an escaped key may
// still name a member, as it does for encoding/json, though real responses
// never have one.
func (s *JSONScanner) endKey() {
	s.member = memberOther
	if s.keyN > maxKey {
		return
	}
	raw := s.key[:s.keyN]
	name := raw[1 : len(raw)-1]
	if bytes.IndexByte(name, '\\') >= 0 {
		var k string
		if json.Unmarshal(raw, &k) != nil {
			return
		}
		name = []byte(k)
	}
	for i, k := range topKeys {
		if string(name) == k {
			s.member = memberUsage + jsonMember(i)
			return
		}
	}
}

// capture adds b to the value of the member being read, if it is kept,
// taking a pooled buffer at its first byte.
func (s *JSONScanner) capture(b []byte) {
	if s.member == memberOther || s.over {
		return
	}
	if s.buf == nil {
		s.buf = smallBufs.Get().(*[]byte)
	}
	var ok bool
	if *s.buf, ok = appendBounded(*s.buf, b, maxCapture); !ok {
		s.over = true
		s.releaseBuf()
	}
}

// releaseBuf returns the buffer of the value being read to its pool.
func (s *JSONScanner) releaseBuf() {
	if b := s.buf; b != nil {
		s.buf = nil
		putBuf(b)
	}
}

// endValue is called when a top-level member's value is complete. It
// decodes the value, if kept, with encoding/json: "usage" replaces all the
// counts (one it lacks reads 0), "model" is a string (null leaves it
// alone) and "error" an object whose "type" is read. A value that
// encoding/json cannot decode into these is ignored, and so is an empty
// error type.
func (s *JSONScanner) endValue() {
	m := s.member
	s.member = memberOther
	if s.buf == nil {
		// Not kept, or it outgrew maxCapture and was dropped.
		return
	}
	v := *s.buf
	d := getDecoder()
	switch m {
	case memberUsage:
		o := &d.usage
		*o = usageObject{}
		if d.decodeObject(v, o) {
			s.u.clearCounts()
			o.apply(&s.u)
		}
	case memberModel:
		// A string, or null, which leaves the model alone.
		d.model = ""
		if d.decode(v, &d.model) && string(bytes.TrimSpace(v)) != "null" {
			s.u.Model = d.model
		}
	case memberError:
		d.err = errorObject{}
		if d.decodeObject(v, &d.err) && d.err.Type != "" {
			s.u.ErrorType = d.err.Type
		}
	}
	d.release()
	s.releaseBuf()
}
