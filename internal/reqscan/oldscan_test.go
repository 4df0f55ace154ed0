package reqscan

// This file keeps the scanner as it was before skipNested and skipString were
// rewritten for speed, as a reference for FuzzScanOldNew and BenchmarkOldScan.

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"
)

// oldScan is Scan with the reference scanner.
func oldScan(body []byte) (Info, error) {
	var info Info
	s := oldScanner{data: body}
	s.skipWS()
	if s.pos >= len(body) || body[s.pos] != '{' {
		return info, errNotObject
	}
	s.pos++
	s.depth = 1

	var model, stream, maxTokens, metadata, userID, system, messages, first []byte
	s.skipWS()
	if err := s.need(); err != nil {
		return info, err
	}
	if body[s.pos] == '}' {
		s.pos++
	} else {
		for {
			f, err := s.key()
			if err != nil {
				return info, err
			}
			start := s.pos
			switch {
			case f == fieldMessages && body[s.pos] == '[':
				first, err = s.arrayFirst()
			case f == fieldMetadata && body[s.pos] == '{':
				userID, _, err = s.member("user_id")
			default:
				err = s.skipValue()
			}
			if err != nil {
				return info, err
			}
			v := body[start:s.pos]
			switch f {
			case fieldModel:
				model = v
			case fieldStream:
				stream = v
			case fieldMaxTokens:
				maxTokens = v
			case fieldMetadata:
				metadata = v
				if v[0] != '{' {
					userID = nil
				}
			case fieldSystem:
				system = v
			case fieldMessages:
				messages = v
				if v[0] != '[' {
					first = nil
				}
			}
			s.skipWS()
			if err := s.need(); err != nil {
				return info, err
			}
			if body[s.pos] == '}' {
				s.pos++
				break
			}
			if body[s.pos] != ',' {
				return info, s.errUnexpected("after object value")
			}
			s.pos++
			s.skipWS()
		}
	}
	s.skipWS()
	if s.pos != len(body) {
		return info, s.errUnexpected("after top-level value")
	}

	var err error
	if info.Model, err = stringField(model, "model"); err != nil {
		return Info{}, err
	}
	if !isNull(stream) {
		switch string(stream) {
		case "true":
			info.Stream = true
		case "false":
		default:
			return Info{}, &fieldError{field: "stream", msg: "is not a boolean"}
		}
	}
	if !isNull(maxTokens) {
		n, ok := parseInt(maxTokens)
		if !ok {
			return Info{}, &fieldError{field: "max_tokens", msg: "is not an integer"}
		}
		info.MaxTokens = n
	}
	if !isNull(metadata) {
		if metadata[0] != '{' {
			return Info{}, &fieldError{field: "metadata", msg: "is not an object"}
		}
		if info.UserID, err = stringField(userID, "metadata.user_id"); err != nil {
			return Info{}, err
		}
		info.SessionID = SessionFromUserID(info.UserID)
	}
	if !isNull(messages) && messages[0] != '[' {
		return Info{}, &fieldError{field: "messages", msg: "is not an array"}
	}
	info.system, info.first = system, first
	return info, nil
}

// oldScanner walks a JSON document held in memory.
type oldScanner struct {
	data  []byte
	pos   int // offset of the next unread byte
	depth int // nesting depth of the value at pos's enclosing container

	// isObject has bit d set when the container at depth d is an object
	// rather than an array; skipNested needs it to match closing brackets.
	isObject [maxDepth/64 + 1]uint64
}

// key reads an object key and its colon, leaving pos at the start of the
// value, and reports which recorded field the key names.
func (s *oldScanner) key() (field, error) {
	if err := s.need(); err != nil {
		return 0, err
	}
	if s.data[s.pos] != '"' {
		return 0, s.errUnexpected("looking for object key")
	}
	start := s.pos
	if err := s.skipString(); err != nil {
		return 0, err
	}
	k := s.data[start+1 : s.pos-1]
	if bytes.IndexByte(k, '\\') < 0 {
		// fieldByName is inlined, so string(k) does not allocate.
		f := fieldByName(string(k))
		return f, s.colon()
	}
	// An escaped key may still name a field ("mod\u0065l"), as it does
	// for encoding/json. Real clients never send one, so the allocation
	// is acceptable.
	name, err := unquote(k)
	if err != nil {
		return 0, s.errAt(start, err.Error())
	}
	f := fieldByName(name)
	if err := s.colon(); err != nil {
		return 0, err
	}
	return f, nil
}

// colon reads optional whitespace, a colon and more optional whitespace,
// leaving pos at the start of a value.
func (s *oldScanner) colon() error {
	s.skipWS()
	if err := s.need(); err != nil {
		return err
	}
	if s.data[s.pos] != ':' {
		return s.errUnexpected("after object key")
	}
	s.pos++
	s.skipWS()
	return s.need()
}

// member reads the object at pos and returns the raw value of its last
// member named name and the value's offset, or nil if there is none.
func (s *oldScanner) member(name string) (val []byte, off int, err error) {
	s.depth++
	defer func() { s.depth-- }()
	if s.depth > maxDepth {
		return nil, 0, s.errAt(s.pos, "exceeded max depth")
	}
	s.pos++ // '{'
	s.skipWS()
	if err := s.need(); err != nil {
		return nil, 0, err
	}
	if s.data[s.pos] == '}' {
		s.pos++
		return nil, 0, nil
	}
	for {
		if err = s.need(); err != nil {
			return nil, 0, err
		}
		if s.data[s.pos] != '"' {
			return nil, 0, s.errUnexpected("looking for object key")
		}
		start := s.pos
		if err := s.skipString(); err != nil {
			return nil, 0, err
		}
		k := s.data[start+1 : s.pos-1]
		match := string(k) == name
		if !match && bytes.IndexByte(k, '\\') >= 0 {
			u, err := unquote(k)
			if err != nil {
				return nil, 0, s.errAt(start, err.Error())
			}
			match = u == name
		}
		if err := s.colon(); err != nil {
			return nil, 0, err
		}
		vstart := s.pos
		if err := s.skipValue(); err != nil {
			return nil, 0, err
		}
		if match {
			val, off = s.data[vstart:s.pos], vstart
		}
		s.skipWS()
		if err := s.need(); err != nil {
			return nil, 0, err
		}
		switch s.data[s.pos] {
		case '}':
			s.pos++
			return val, off, nil
		case ',':
			s.pos++
			s.skipWS()
		default:
			return nil, 0, s.errUnexpected("after object value")
		}
	}
}

// arrayFirst reads the array at pos and returns the raw bytes of its first
// element, or nil if it is empty.
func (s *oldScanner) arrayFirst() ([]byte, error) {
	s.depth++
	defer func() { s.depth-- }()
	if s.depth > maxDepth {
		return nil, s.errAt(s.pos, "exceeded max depth")
	}
	s.pos++ // '['
	s.skipWS()
	if err := s.need(); err != nil {
		return nil, err
	}
	if s.data[s.pos] == ']' {
		s.pos++
		return nil, nil
	}
	start := s.pos
	if err := s.skipValue(); err != nil {
		return nil, err
	}
	first := s.data[start:s.pos]
	for {
		s.skipWS()
		if err := s.need(); err != nil {
			return nil, err
		}
		switch s.data[s.pos] {
		case ']':
			s.pos++
			return first, nil
		case ',':
			s.pos++
			s.skipWS()
			if err := s.skipValue(); err != nil {
				return nil, err
			}
		default:
			return nil, s.errUnexpected("after array element")
		}
	}
}

// skipWS advances past JSON whitespace.
func (s *oldScanner) skipWS() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// need returns an error if the input ends at pos.
func (s *oldScanner) need() error {
	if s.pos >= len(s.data) {
		return s.errAt(s.pos, "unexpected end of input")
	}
	return nil
}

// skipValue advances past the value that starts at pos.
func (s *oldScanner) skipValue() error {
	if err := s.need(); err != nil {
		return err
	}
	if c := s.data[s.pos]; c == '{' || c == '[' {
		return s.skipNested()
	}
	return s.skipScalar()
}

// skipScalar advances past the string, number or literal that starts at pos.
func (s *oldScanner) skipScalar() error {
	switch c := s.data[s.pos]; {
	case c == '"':
		return s.skipString()
	case c == 't':
		return s.skipLiteral("true")
	case c == 'f':
		return s.skipLiteral("false")
	case c == 'n':
		return s.skipLiteral("null")
	case c == '-' || '0' <= c && c <= '9':
		// Number grammar is not checked: the bytes that can appear in a
		// number are consumed, and anything else ends it. A garbled
		// number can only make Scan more lenient, never misread the
		// structure around it.
		s.pos++
		for s.pos < len(s.data) {
			c := s.data[s.pos]
			if '0' <= c && c <= '9' || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-' {
				s.pos++
				continue
			}
			break
		}
		return nil
	}
	return s.errUnexpected("looking for beginning of value")
}

func (s *oldScanner) skipLiteral(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return s.errUnexpected("in literal " + lit)
	}
	s.pos += len(lit)
	return nil
}

// skipString advances past the string whose opening quote is at pos.
//
// Rather than stepping through the string a byte at a time, it jumps from
// quote to quote with bytes.IndexByte, which is vectorised, and decides
// whether each quote is escaped by counting the backslashes before it.
// Escapes are otherwise not validated.
func (s *oldScanner) skipString() error {
	start := s.pos
	i := s.pos + 1
	// Most strings are short keys and values, for which a plain loop is
	// cheaper than the call overhead of IndexByte.
	for n := min(len(s.data), i+16); i < n; i++ {
		if c := s.data[i]; c == '"' {
			s.pos = i + 1
			return nil
		} else if c == '\\' {
			break
		}
	}
	for {
		j := bytes.IndexByte(s.data[i:], '"')
		if j < 0 {
			return s.errAt(start, "unterminated string")
		}
		j += i
		// A backslash run cannot extend before i: data[i-1] is the
		// opening quote, a byte the loop above found to be neither a
		// quote nor a backslash, or a quote found to be escaped.
		k := j
		for k > i && s.data[k-1] == '\\' {
			k--
		}
		i = j + 1
		if (j-k)%2 == 0 {
			s.pos = i
			return nil
		}
	}
}

// skipNested advances past the object or array that starts at pos. It is
// iterative, with the kind of each open container kept in a bit set, so
// deep nesting costs neither stack growth nor allocation.
func (s *oldScanner) skipNested() error {
	base := s.depth
	d := base
	for {
		// A value starts at pos.
		if err := s.need(); err != nil {
			return err
		}
		switch c := s.data[s.pos]; c {
		case '{', '[':
			d++
			if d > maxDepth {
				return s.errAt(s.pos, "exceeded max depth")
			}
			w, bit := d/64, uint64(1)<<(d%64)
			if c == '{' {
				s.isObject[w] |= bit
			} else {
				s.isObject[w] &^= bit
			}
			s.pos++
			s.skipWS()
			if err := s.need(); err != nil {
				return err
			}
			if s.data[s.pos] == c+2 { // '{'+2 == '}', '['+2 == ']'
				s.pos++
				d--
				break
			}
			if c == '{' {
				if err := s.objectKey(); err != nil {
					return err
				}
			}
			continue
		default:
			if err := s.skipScalar(); err != nil {
				return err
			}
		}

		// A value has ended; close containers until one continues.
		for d > base {
			s.skipWS()
			if err := s.need(); err != nil {
				return err
			}
			obj := s.isObject[d/64]&(1<<(d%64)) != 0
			c := s.data[s.pos]
			if c == ',' {
				s.pos++
				s.skipWS()
				if obj {
					if err := s.objectKey(); err != nil {
						return err
					}
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				s.pos++
				d--
				continue
			}
			return s.errUnexpected("after value")
		}
		if d == base {
			return nil
		}
	}
}

// objectKey advances past an object key and its colon without interpreting
// the key.
func (s *oldScanner) objectKey() error {
	if err := s.need(); err != nil {
		return err
	}
	if s.data[s.pos] != '"' {
		return s.errUnexpected("looking for object key")
	}
	if err := s.skipString(); err != nil {
		return err
	}
	return s.colon()
}

func (s *oldScanner) errAt(off int, msg string) error {
	return &syntaxError{off: off, msg: msg}
}

// errUnexpected reports the byte at pos as unexpected in the given context.
func (s *oldScanner) errUnexpected(context string) error {
	if s.pos >= len(s.data) {
		return s.errAt(s.pos, "unexpected end of input")
	}
	return s.errAt(s.pos, "unexpected character "+strconv.QuoteRune(rune(s.data[s.pos]))+" "+context)
}

// FuzzScanOldNew checks that Scan makes the same decisions as oldScan: the
// same error, or the same Info including the raw system and first message.
func FuzzScanOldNew(f *testing.F) {
	for _, s := range []string{
		`{}`, ` { } `, `{"a":{}}`, `{"a":[]}`, `{"a":{ }}`, `{"a":[ ]}`,
		`{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"metadata":{"user_id":"user_1_account_2_session_3"},"system":"s","messages":[{"role":"user","content":"hi"}]}`,
		`{"a":[1,{"b":"\\\"}"},[true,false,null]],"max_tokens":-0}`,
		`{"a":{"b":"0123456789abcdef0123456789abcdef0123456789\\\\\"x"}}`,
		`{"a":{"b":"0123456789abcdef0123456789abcdef01234567\\"}`,
		`{"a":[1 ,2 ] , "b" : { "c" :tru }}`,
		`{"a":[fals]}`, `{"a":[nul]}`, `{"a":{"b":1]}`, `{"a":[1,]}`, `{"a":{"b" 1}}`,
		"{\"a\":[\n\t{\"b\"\r:\n1}\n]\n}",
	} {
		f.Add([]byte(s))
	}
	body := claudeCodeBody(4 << 10)
	f.Add(body)
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		f.Fatal(err)
	}
	indented, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(indented)
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gerr := Scan(body)
		if errors.Is(gerr, ErrDuplicate) {
			return // the old scanner let the last one count; checkScan covers this
		}
		want, werr := oldScan(body)
		if (gerr == nil) != (werr == nil) || gerr != nil && gerr.Error() != werr.Error() {
			t.Fatalf("Scan(%q) error = %v, oldScan error = %v", body, gerr, werr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Scan(%q) = %+v, oldScan = %+v", body, got, want)
		}
	})
}

func BenchmarkOldScan(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"4KB", 4 << 10}, {"200KB", 200 << 10}} {
		body := claudeCodeBody(size.n)
		b.Run(size.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := oldScan(body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
