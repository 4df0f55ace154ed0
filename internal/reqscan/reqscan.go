// Package reqscan extracts the few fields a relay needs from an Anthropic
// Messages API request body without decoding the whole body.
//
// Request bodies sent by agentic clients such as Claude Code are often
// hundreds of kilobytes of conversation history, of which the relay needs a
// handful of small top-level values. Scan walks the top-level object once,
// skipping every other value with a fast structural scanner, and allocates
// only the strings it returns.
//
// Why a scanner of its own rather than a JSON library: it runs on every
// request, over the whole body, before the request can be forwarded, and it
// does more than read four fields: it checks the body's structure (so a
// garbled body gets a 400 here rather than a charge upstream), refuses
// repeated fields that a library would silently resolve one way or the
// other, and returns the raw system prompt and first message for the
// conversation-prefix hash. On a 200 KB Claude Code body (bench/scanners:
// cd bench && go test -run '^$' -bench . -benchmem ./scanners/; best of 5 on
// 2 shared cores, 2026-12-02) Scan takes 73 µs with 2 allocations;
// github.com/tidwall/gjson 211 µs (8) and github.com/buger/jsonparser
// 240 µs (3), which read the same four fields but check nothing they skip,
// are 3× slower; the encoding/json/v2 tokenizer (jsontext, validating)
// 509 µs (55), 7×; encoding/json into a struct 1.85 ms (12), 25×. At 4 KB:
// 3.4 µs against 4.1 (jsonparser), 5.8 (gjson), 29 (jsontext) and 39 µs.
package reqscan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/bits"
	"strconv"
	"strings"

	"github.com/cc-relay/caddy-cc-relay/internal/stablehash"
)

// Info is what the relay needs from a Messages API request body.
type Info struct {
	// Model is the top-level "model" string, or "" if absent or null.
	Model string

	// Stream is the top-level "stream" boolean, or false if absent or null.
	Stream bool

	// MaxTokens is the top-level "max_tokens" integer, or 0 if absent or
	// null.
	MaxTokens int64

	// UserID is the unescaped "metadata"."user_id" string, or "" if absent
	// or null.
	UserID string

	// SessionID is SessionFromUserID(UserID).
	SessionID string

	// system and first are the raw top-level "system" value and first
	// element of "messages", for PrefixHash; they alias the scanned body.
	system, first []byte
}

// maxDepth bounds the nesting of arrays and objects, counting the top-level
// object as 1. It equals encoding/json's limit, so every body that
// encoding/json accepts is deep enough to be accepted here, and a hostile
// body cannot make the scanner's depth bookkeeping grow.
const maxDepth = 10000

// Scan reads body, which must be one JSON object, and returns the fields
// described by Info.
//
// Scan returns an error if body is not a single JSON object or is truncated
// or garbled (an unterminated string, unbalanced brackets, a missing
// separator, trailing data). It does not check everything encoding/json
// checks: it accepts malformed numbers, invalid escapes and control
// characters inside strings it skips, and invalid UTF-8, so it may accept a
// body that encoding/json would reject. It accepts every body that
// encoding/json accepts whose recognised fields have the right types.
//
// The recognised fields are type-checked, because a relay that guessed would
// mis-account the request: "model" must be a string, "stream" a boolean,
// "max_tokens" an integer literal that fits in an int64 (so 1.0 and 1e3 are
// rejected), "metadata" an object, "metadata"."user_id" a string and
// "messages" an array. A null value counts as absent. "system" may be of any
// type.
//
// "model", "stream", "max_tokens", "metadata" and "metadata"."user_id" given
// more than once are an error (ErrDuplicate): parsers differ on which one
// counts (encoding/json and Python take the last, others the first or
// refuse), and a relay that read another value than the upstream would
// meter the request on the wrong model or size. Other fields may repeat.
func Scan(body []byte) (Info, error) {
	var info Info
	s := scanner{data: body}
	s.skipWS()
	if s.pos >= len(body) || body[s.pos] != '{' {
		return info, errNotObject
	}
	s.pos++
	s.depth = 1

	var model, stream, maxTokens, metadata, userID, system, messages, first []byte
	var seen uint32 // bit f set once field f was read
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
			if f >= fieldModel && f <= fieldMetadata {
				if seen&(1<<f) != 0 {
					return info, &fieldError{field: f.String(), msg: "is given more than once", dup: true}
				}
				seen |= 1 << f
			}
			start := s.pos
			switch {
			case f == fieldMessages && body[s.pos] == '[':
				first, err = s.arrayFirst()
			case f == fieldMetadata && body[s.pos] == '{':
				userID, _, err = s.member("user_id", true)
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

// PrefixHash identifies the start of the conversation: it hashes the
// top-level "system" value followed by the first element of "messages".
// It is 0 only when both are absent (or null, or "messages" is empty), and
// never 0 otherwise.
//
// The JSON tokens are hashed, not the bytes: whitespace does not count,
// and neither do "cache_control" members, which clients move to the
// newest message every turn (the first message carries one in the first
// turn and not in the next). Key order does count. Hashes are stable
// within one process and differ between processes.
//
// It is computed on demand, because a caller that has a session id does
// not need it: it reads the body that was scanned, which must not have
// changed since.
func (info *Info) PrefixHash() uint64 {
	return prefixHash(info.system, info.first)
}

// prefixHash returns the PrefixHash of a body with the given raw "system"
// value and first message.
func prefixHash(system, first []byte) uint64 {
	if isNull(system) {
		system = nil
	}
	if system == nil && first == nil {
		return 0
	}
	var h stablehash.Hash // equal prefixes hash equal in every process
	h.Reset()
	// A leading tag records which parts are present, so that a body with
	// only a system prompt cannot collide with one whose first message has
	// the same bytes. No separator is needed between the parts because a
	// JSON value's extent is determined by its own bytes.
	var tag byte
	if system != nil {
		tag |= 1
	}
	if first != nil {
		tag |= 2
	}
	h.WriteByte(tag)
	for _, v := range [2][]byte{system, first} {
		if v != nil && !hashTokens(&h, v) {
			h.Write(v) // nested too deep to canonicalise: the bytes will do
		}
	}
	if sum := h.Sum64(); sum != 0 {
		return sum
	}
	// 0 means "no prefix"; remapping the one colliding value is cheaper
	// than making every caller check a separate flag.
	return 1
}

// hashTokens writes the tokens of the valid JSON value v to h, leaving out
// whitespace, commas and every "cache_control" member, so that the hash
// depends only on what the conversation says. Scalars are followed by a 0
// byte so adjacent tokens cannot run together. It reports false, having
// written a prefix, for values nested deeper than 64 levels.
func hashTokens(h *stablehash.Hash, v []byte) bool {
	s := scanner{data: v}
	var objects uint64 // bit d: the container at depth d is an object
	depth, wantKey := 0, false
	for {
		s.skipWS()
		if s.pos >= len(v) {
			return true
		}
		switch c := v[s.pos]; c {
		case '{', '[':
			if depth == 64 {
				return false
			}
			objects = objects&^(1<<depth) | boolBit(c == '{')<<depth
			depth++
			wantKey = c == '{'
			h.WriteByte(c)
			s.pos++
		case '}', ']':
			depth--
			wantKey = false
			h.WriteByte(c)
			s.pos++
		case ',':
			s.pos++
			wantKey = depth > 0 && objects&(1<<(depth-1)) != 0
		case ':':
			s.pos++
			h.WriteByte(':')
		default:
			start := s.pos
			if s.skipScalar() != nil {
				return false
			}
			tok := v[start:s.pos]
			if wantKey {
				wantKey = false
				if string(tok) == `"cache_control"` {
					s.skipWS()
					s.pos++ // the colon
					s.skipWS()
					if s.skipValue() != nil {
						return false
					}
					continue
				}
			}
			h.Write(tok)
			h.WriteByte(0)
		}
	}
}

func boolBit(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

const sessionMarker = "_session_"

// SessionFromUserID extracts the session id from a metadata.user_id value,
// or returns "" if userID has neither of the forms Claude Code sends:
//
//   - The legacy form "user_<hash>_account_<uuid>_session_<uuid>", from
//     which it returns the text after the last "_session_" if it is not
//     empty.
//   - A JSON object such as
//     {"device_id":"...","account_uuid":"...","session_id":"5f0c..."},
//     from which it returns the unescaped "session_id" string if it is not
//     empty. userID must be exactly one object, optionally surrounded by
//     whitespace.
//
// The result is a substring of userID unless the JSON string contains
// escapes, so in the common case SessionFromUserID does not allocate.
func SessionFromUserID(userID string) string {
	if strings.HasPrefix(userID, "user_") {
		i := strings.LastIndex(userID, sessionMarker)
		if i < 0 {
			return ""
		}
		return userID[i+len(sessionMarker):]
	}
	if strings.IndexByte(userID, '{') < 0 {
		return ""
	}
	// The scanner works on bytes. A user_id is small, so copying it into
	// a stack buffer avoids allocating for the conversion.
	var buf [512]byte
	var b []byte
	if len(userID) <= len(buf) {
		b = buf[:len(userID)]
		copy(b, userID)
	} else {
		b = []byte(userID)
	}
	s := scanner{data: b}
	s.skipWS()
	if s.pos >= len(b) || b[s.pos] != '{' {
		return ""
	}
	v, off, err := s.member("session_id", false)
	if err != nil || len(v) < 2 || v[0] != '"' {
		return ""
	}
	s.skipWS()
	if s.pos != len(b) {
		return ""
	}
	raw := v[1 : len(v)-1]
	if !needsUnquote(raw) {
		// b is a copy of userID, so offsets in b are offsets in userID.
		return userID[off+1 : off+1+len(raw)]
	}
	id, err := unquote(raw)
	if err != nil {
		return ""
	}
	return id
}

// stringField decodes the raw JSON value v of the named field, which must be
// a string or null; a nil v (absent) yields "".
func stringField(v []byte, name string) (string, error) {
	if isNull(v) {
		return "", nil
	}
	if v[0] != '"' {
		return "", &fieldError{field: name, msg: "is not a string"}
	}
	s, err := unquote(v[1 : len(v)-1])
	if err != nil {
		return "", &fieldError{field: name, msg: "contains an invalid escape"}
	}
	return s, nil
}

// isNull reports whether the raw value v is absent or the literal null.
func isNull(v []byte) bool {
	return v == nil || string(v) == "null"
}

// parseInt parses a JSON integer literal: an optional minus sign followed by
// digits, with no fraction or exponent. It reports false on anything else,
// including values that overflow an int64.
func parseInt(v []byte) (int64, bool) {
	neg := false
	if len(v) > 0 && v[0] == '-' {
		neg = true
		v = v[1:]
	}
	if len(v) == 0 {
		return 0, false
	}
	// Accumulate as a negative number so that math.MinInt64 fits.
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n < (-1<<63+d)/10 {
			return 0, false
		}
		n = n*10 - d
	}
	if !neg {
		if n == -1<<63 {
			return 0, false
		}
		n = -n
	}
	return n, true
}

// A field identifies a top-level member that Scan records.
type field int

const (
	fieldOther field = iota
	fieldModel
	fieldStream
	fieldMaxTokens
	fieldMetadata
	fieldSystem
	fieldMessages
)

// String is the field's JSON name.
func (f field) String() string {
	switch f {
	case fieldModel:
		return "model"
	case fieldStream:
		return "stream"
	case fieldMaxTokens:
		return "max_tokens"
	case fieldMetadata:
		return "metadata"
	case fieldSystem:
		return "system"
	case fieldMessages:
		return "messages"
	}
	return "other"
}

func fieldByName(name string) field {
	switch name {
	case "model":
		return fieldModel
	case "stream":
		return fieldStream
	case "max_tokens":
		return fieldMaxTokens
	case "metadata":
		return fieldMetadata
	case "system":
		return fieldSystem
	case "messages":
		return fieldMessages
	}
	return fieldOther
}

// scanner walks a JSON document held in memory.
type scanner struct {
	data  []byte
	pos   int // offset of the next unread byte
	depth int // nesting depth of the value at pos's enclosing container

	// isObject has bit d set when the container at depth d is an object
	// rather than an array; skipNested needs it to match closing brackets.
	isObject [maxDepth/64 + 1]uint64
}

// key reads an object key and its colon, leaving pos at the start of the
// value, and reports which recorded field the key names.
func (s *scanner) key() (field, error) {
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
func (s *scanner) colon() error {
	// Compact JSON: a colon directly followed by the value.
	if p := s.pos; p+1 < len(s.data) && s.data[p] == ':' && s.data[p+1] > ' ' {
		s.pos = p + 1
		return nil
	}
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

// member reads the object at pos and returns the raw value of its member
// named name and the value's offset, or nil if there is none. A repeated
// member is an error when once is set, else the last one counts.
func (s *scanner) member(name string, once bool) (val []byte, off int, err error) {
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
			if once && val != nil {
				return nil, 0, &fieldError{field: "metadata." + name, msg: "is given more than once", dup: true}
			}
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
func (s *scanner) arrayFirst() ([]byte, error) {
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
func (s *scanner) skipWS() {
	s.pos = skipWS(s.data, s.pos)
}

// skipWS returns the offset of the first byte at or after pos that is not
// JSON whitespace.
func skipWS(data []byte, pos int) int {
	for pos < len(data) {
		switch data[pos] {
		case ' ', '\t', '\n', '\r':
			pos++
		default:
			return pos
		}
	}
	return pos
}

// need returns an error if the input ends at pos.
func (s *scanner) need() error {
	if s.pos >= len(s.data) {
		return s.errAt(s.pos, "unexpected end of input")
	}
	return nil
}

// skipValue advances past the value that starts at pos.
func (s *scanner) skipValue() error {
	if err := s.need(); err != nil {
		return err
	}
	if c := s.data[s.pos]; c == '{' || c == '[' {
		return s.skipNested()
	}
	return s.skipScalar()
}

// skipScalar advances past the string, number or literal that starts at pos.
func (s *scanner) skipScalar() error {
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

func (s *scanner) skipLiteral(lit string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(lit)) {
		return s.errUnexpected("in literal " + lit)
	}
	s.pos += len(lit)
	return nil
}

// skipString advances past the string whose opening quote is at pos.
// Escapes are not validated.
func (s *scanner) skipString() error {
	e := stringEnd(s.data, s.pos+1)
	if e < 0 {
		return s.errAt(s.pos, "unterminated string")
	}
	s.pos = e
	return nil
}

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// quoteOrBackslash returns a word with the high bit set in the lowest byte
// of w that is '"' or '\\' (and possibly in bytes above it), or 0 if there
// is none. The usual has-zero-byte trick can only report false positives
// above a true match, so the lowest set bit is always exact.
func quoteOrBackslash(w uint64) uint64 {
	q := w ^ ('"' * ones)
	b := w ^ ('\\' * ones)
	return ((q-ones)&^q | (b-ones)&^b) & highs
}

// stringEnd returns the offset just past the closing quote of the string
// whose contents start at i, or -1 if the string is unterminated.
//
// Most strings are short keys and values, so it first looks at the string
// eight bytes at a time; past 32 bytes, or at the first backslash, it jumps
// from quote to quote with bytes.IndexByte, which is vectorised, and decides
// whether each quote is escaped by counting the backslashes before it.
func stringEnd(data []byte, i int) int {
	for n := 0; n < 4 && i+8 <= len(data); n++ {
		if m := quoteOrBackslash(binary.LittleEndian.Uint64(data[i:])); m != 0 {
			i += bits.TrailingZeros64(m) / 8
			if data[i] == '"' {
				return i + 1
			}
			return stringEndEscaped(data, i)
		}
		i += 8
	}
	if i+8 > len(data) {
		for ; i < len(data); i++ {
			switch data[i] {
			case '"':
				return i + 1
			case '\\':
				return stringEndEscaped(data, i)
			}
		}
		return -1
	}
	return stringEndEscaped(data, i)
}

// stringEndEscaped is stringEnd for a string whose contents continue at i,
// where data[i-1] is neither a backslash nor an escaped quote.
func stringEndEscaped(data []byte, i int) int {
	for {
		j := bytes.IndexByte(data[i:], '"')
		if j < 0 {
			return -1
		}
		j += i
		// A backslash run cannot extend before i: data[i-1] is the
		// opening quote, a byte found to be neither a quote nor a
		// backslash, or a quote found to be escaped.
		k := j
		for k > i && data[k-1] == '\\' {
			k--
		}
		i = j + 1
		if (j-k)%2 == 0 {
			return i
		}
	}
}

// numberByte reports the bytes that can continue a number.
var numberByte = [256]bool{
	'0': true, '1': true, '2': true, '3': true, '4': true,
	'5': true, '6': true, '7': true, '8': true, '9': true,
	'.': true, 'e': true, 'E': true, '+': true, '-': true,
}

// skipNested advances past the object or array that starts at pos. It is
// iterative, with the kind of each open container kept in a bit set, so
// deep nesting costs neither stack growth nor allocation.
//
// It is the hot loop of Scan, so it works on local copies of the input and
// offset and handles compact JSON (no whitespace between tokens) inline,
// deferring to skipWS only when the next byte could be whitespace. Errors
// are reported as skipValue's helpers report them.
func (s *scanner) skipNested() error {
	data := s.data
	pos := s.pos
	base := s.depth
	d := base
	for {
		// A value starts at pos.
		if pos >= len(data) {
			return s.errAt(pos, "unexpected end of input")
		}
		switch c := data[pos]; c {
		case '"':
			e := stringEnd(data, pos+1)
			if e < 0 {
				return s.errAt(pos, "unterminated string")
			}
			pos = e
		case '{', '[':
			d++
			if d > maxDepth {
				return s.errAt(pos, "exceeded max depth")
			}
			w, bit := uint(d)/64, uint64(1)<<(uint(d)%64)
			if c == '{' {
				s.isObject[w] |= bit
			} else {
				s.isObject[w] &^= bit
			}
			pos++
			if pos >= len(data) || data[pos] <= ' ' {
				pos = skipWS(data, pos)
				if pos >= len(data) {
					return s.errAt(pos, "unexpected end of input")
				}
			}
			if data[pos] == c+2 { // '{'+2 == '}', '['+2 == ']'
				pos++
				d--
				break
			}
			if c == '{' {
				var err error
				if pos, err = s.keyAt(pos); err != nil {
					return err
				}
			}
			continue
		case 't':
			if len(data)-pos < 4 || string(data[pos:pos+4]) != "true" {
				s.pos = pos
				return s.errUnexpected("in literal true")
			}
			pos += 4
		case 'f':
			if len(data)-pos < 5 || string(data[pos:pos+5]) != "false" {
				s.pos = pos
				return s.errUnexpected("in literal false")
			}
			pos += 5
		case 'n':
			if len(data)-pos < 4 || string(data[pos:pos+4]) != "null" {
				s.pos = pos
				return s.errUnexpected("in literal null")
			}
			pos += 4
		case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
			// Number grammar is not checked; see skipScalar.
			pos++
			for pos < len(data) && numberByte[data[pos]] {
				pos++
			}
		default:
			s.pos = pos
			return s.errUnexpected("looking for beginning of value")
		}

		// A value has ended; close containers until one continues.
		for d > base {
			if pos >= len(data) || data[pos] <= ' ' {
				pos = skipWS(data, pos)
				if pos >= len(data) {
					return s.errAt(pos, "unexpected end of input")
				}
			}
			obj := s.isObject[uint(d)/64]&(1<<(uint(d)%64)) != 0
			c := data[pos]
			if c == ',' {
				pos++
				if obj {
					var err error
					if pos, err = s.keyAt(pos); err != nil {
						return err
					}
				} else if pos < len(data) && data[pos] <= ' ' {
					pos = skipWS(data, pos)
				}
				break
			}
			if obj && c == '}' || !obj && c == ']' {
				pos++
				d--
				continue
			}
			s.pos = pos
			return s.errUnexpected("after value")
		}
		if d == base {
			s.pos = pos
			return nil
		}
	}
}

// keyAt advances past optional whitespace, an object key and its colon
// starting at pos without interpreting the key, and returns the offset of
// the value.
func (s *scanner) keyAt(pos int) (int, error) {
	data := s.data
	if pos < len(data) && data[pos] == '"' {
		// Compact JSON: "key":value.
		if e := stringEnd(data, pos+1); e >= 0 && e+1 < len(data) && data[e] == ':' && data[e+1] > ' ' {
			return e + 1, nil
		}
	}
	s.pos = pos
	s.skipWS()
	if err := s.objectKey(); err != nil {
		return 0, err
	}
	return s.pos, nil
}

// objectKey advances past an object key and its colon without interpreting
// the key.
func (s *scanner) objectKey() error {
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

func (s *scanner) errAt(off int, msg string) error {
	return &syntaxError{off: off, msg: msg}
}

// errUnexpected reports the byte at pos as unexpected in the given context.
func (s *scanner) errUnexpected(context string) error {
	if s.pos >= len(s.data) {
		return s.errAt(s.pos, "unexpected end of input")
	}
	return s.errAt(s.pos, "unexpected character "+strconv.QuoteRune(rune(s.data[s.pos]))+" "+context)
}

// errNotObject is returned for a body whose top-level value is not an
// object, including an empty body.
var errNotObject = errors.New("request body is not a JSON object")

// A syntaxError describes malformed JSON and where it was found.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string {
	return "invalid JSON at offset " + strconv.Itoa(e.off) + ": " + e.msg
}

// ErrDuplicate is matched (errors.Is) by the error for a recognised field
// given more than once.
var ErrDuplicate = errors.New("duplicate field")

// A fieldError reports a recognised field with an unusable value.
type fieldError struct {
	field string
	msg   string
	dup   bool
}

// Is makes errors.Is(err, ErrDuplicate) find a repeated field.
func (e *fieldError) Is(target error) bool { return e.dup && target == ErrDuplicate }

func (e *fieldError) Error() string {
	return e.field + " " + e.msg
}
