package usage

import (
	"bytes"
	"sync"
)

// maxEventData bounds the data an SSEScanner buffers for one event. The
// events it reads are a few hundred bytes; an event with more data is
// dropped rather than allowed to grow memory.
const maxEventData = 64 << 10

// A kept event's data is buffered in a pooled buffer, held only from the
// event's first kept byte to its end, so that the thousands of streams a
// relay has open between events hold no buffer. Buffers start at
// smallBufSize, which the events read fit in, and may grow to maxSmallBuf;
// data that outgrows that moves to a buffer of maxEventData bytes, from a
// pool of its own so that an upstream that keeps sending oversized events
// does not make every event allocate 64 KiB, nor does a small event get a
// 64 KiB buffer.
const (
	smallBufSize = 1 << 10
	maxSmallBuf  = 4 << 10
)

var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 0, smallBufSize); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, 0, maxEventData); return &b }}
)

// sniffLen is how much of an event's data an SSEScanner reads to find its
// "type" when the event has no "event:" line.
const sniffLen = 64

// SSEScanner scans a text/event-stream Messages API response for usage. The
// zero value is ready to use.
//
// It reads three events: message_start (model and initial usage),
// message_delta (cumulative usage: each count it carries replaces the
// previous value) and error (error type). An event is recognised by its
// "event:" line or, failing that, by a "type" member at the start of its
// data. The data of other events, such as content_block_delta, is skipped
// without being copied, and a recognised event whose data exceeds 64 KiB is
// ignored, so an SSEScanner holds at most 64 KiB however long the stream,
// and only while it is in the middle of an event it reads. The events it
// reads are decoded with encoding/json.
//
// Lines may end in "\n", "\r\n" or "\r". As the event-stream format
// requires, an event takes effect at the blank line that ends it, so an
// event cut off by the end of the stream is ignored.
type SSEScanner struct {
	u Usage

	state sseState
	cr    bool // the last byte was a '\r' ending a line; a '\n' next is part of it
	kind  sseKind

	field  [len("event")]byte // field name read so far
	fieldN int                // its length; more than len(field) means no field we read

	name  [16]byte // the current event's name, from its "event:" line
	nameN int      // its length; more than len(name) means no event we read

	rel       relevance      // whether the current event's data is being kept
	sniffed   [sniffLen]byte // the start of the current event's data, while rel is relUnknown
	sniffN    int            // its length
	data      *[]byte        // the current event's data, if kept: a pooled buffer, or nil
	dataLines int            // data lines in the current event
	dropped   bool           // the current event's data outgrew maxEventData
}

type sseState uint8

const (
	sseLineStart sseState = iota // no byte of the line read yet
	sseField                     // reading the field name
	sseSpace                     // after the colon, where one space is ignored
	sseValue                     // reading the field value
	sseSkip                      // skipping the rest of the line
)

// sseKind is the kind of field whose value is being read.
type sseKind uint8

const (
	sseEvent sseKind = iota
	sseData
)

type relevance uint8

const (
	relUnknown    relevance = iota // no "event:" line yet, data not sniffed
	relRelevant                    // an event the scanner reads, or might
	relIrrelevant                  // an event the scanner skips
)

var newline = []byte{'\n'}

// Write consumes p, which continues the stream from the previous Write. It
// never fails and never retains p. It returns true if the usage changed, so
// that the caller can account for output tokens as they stream.
func (s *SSEScanner) Write(p []byte) (changed bool) {
	before := s.u
	for len(p) > 0 {
		if s.cr {
			s.cr = false
			if p[0] == '\n' {
				p = p[1:]
				continue
			}
		}
		switch s.state {
		case sseLineStart, sseField:
			// Field names are short, so they are read a byte at a time.
			c := p[0]
			p = p[1:]
			switch c {
			case '\r', '\n':
				s.endLine(c)
			case ':':
				s.startValue()
			default:
				if s.fieldN < len(s.field) {
					s.field[s.fieldN] = c
				}
				s.fieldN++
				s.state = sseField
			}
		case sseSpace:
			if p[0] == ' ' {
				p = p[1:]
			}
			s.state = sseValue
			if s.kind == sseData {
				s.startData()
			}
		case sseValue, sseSkip:
			i := lineEnd(p)
			seg := p
			if i >= 0 {
				seg = p[:i]
			}
			if s.state == sseValue {
				if s.kind == sseEvent {
					s.eventName(seg)
				} else {
					s.dataValue(seg, i >= 0)
				}
			}
			if i < 0 {
				return s.u != before
			}
			s.endLine(p[i])
			p = p[i+1:]
		}
	}
	return s.u != before
}

// Usage returns the usage seen so far.
func (s *SSEScanner) Usage() Usage {
	return s.u
}

// lineEnd returns the index of the first '\r' or '\n' in p, or -1.
func lineEnd(p []byte) int {
	// Two vectorised searches beat one byte-at-a-time search for either:
	// '\r' is rare, so the second search is over the part before the
	// first '\n' and usually finds nothing.
	i := bytes.IndexByte(p, '\n')
	seg := p
	if i >= 0 {
		seg = p[:i]
	}
	if j := bytes.IndexByte(seg, '\r'); j >= 0 {
		return j
	}
	return i
}

// startValue is called at the colon that ends a field name.
func (s *SSEScanner) startValue() {
	switch {
	case s.state == sseLineStart:
		// A line starting with a colon is a comment.
		s.state = sseSkip
	case s.isField("data"):
		s.kind, s.state = sseData, sseSpace
	case s.isField("event"):
		s.kind, s.state = sseEvent, sseSpace
		s.nameN = 0
	default:
		s.state = sseSkip
	}
}

func (s *SSEScanner) isField(name string) bool {
	return s.fieldN == len(name) && string(s.field[:s.fieldN]) == name
}

// endLine is called at the '\r' or '\n' that ends a line.
func (s *SSEScanner) endLine(c byte) {
	s.cr = c == '\r'
	switch s.state {
	case sseLineStart:
		s.dispatch()
	case sseField:
		// A line with no colon is a field with an empty value.
		switch {
		case s.isField("data"):
			s.startData()
			s.dataValue(nil, true)
		case s.isField("event"):
			s.nameN = 0
			s.endEventName()
		}
	case sseSpace:
		if s.kind == sseData {
			s.startData()
			s.dataValue(nil, true)
		} else {
			s.endEventName()
		}
	case sseValue:
		if s.kind == sseEvent {
			s.endEventName()
		}
	}
	s.state = sseLineStart
	s.fieldN = 0
}

// eventName reads part of an "event:" value.
func (s *SSEScanner) eventName(seg []byte) {
	if s.nameN+len(seg) <= len(s.name) {
		copy(s.name[s.nameN:], seg)
	}
	s.nameN += len(seg)
}

// endEventName is called at the end of an "event:" line and decides from the
// name whether to keep the event's data.
func (s *SSEScanner) endEventName() {
	if s.nameN == 0 {
		// An empty name is no name: the data decides.
		return
	}
	if s.nameN <= len(s.name) && relevantType(s.name[:s.nameN]) {
		s.rel = relRelevant
	} else {
		s.rel = relIrrelevant
		s.releaseData()
	}
}

// startData is called at the start of a "data:" value.
func (s *SSEScanner) startData() {
	if s.dataLines > 0 {
		// The event-stream format joins data lines with newlines.
		s.dataValue(newline, false)
	}
	s.dataLines++
}

// dataValue reads part of a "data:" value; eol reports whether seg ends
// the line.
func (s *SSEScanner) dataValue(seg []byte, eol bool) {
	if s.rel == relUnknown {
		// Without an event name, the start of the data decides. It is
		// gathered in s.sniffed rather than a pooled buffer, so that an
		// event the scanner skips never takes one.
		n := copy(s.sniffed[s.sniffN:], seg)
		s.sniffN += n
		seg = seg[n:]
		if s.sniffN < sniffLen && !eol {
			return
		}
		s.rel = sniff(s.sniffed[:s.sniffN])
		if s.rel == relRelevant {
			s.appendData(s.sniffed[:s.sniffN])
		}
		s.sniffN = 0
	}
	if s.rel == relRelevant {
		s.appendData(seg)
	}
}

func (s *SSEScanner) appendData(p []byte) {
	if s.dropped {
		return
	}
	if s.data == nil {
		s.data = smallBufs.Get().(*[]byte)
	}
	var ok bool
	if *s.data, ok = appendBounded(*s.data, p, maxSmallBuf); ok {
		return
	}
	n := len(*s.data) + len(p)
	if n > maxEventData {
		s.dropped = true
		s.releaseData()
		return
	}
	if cap(*s.data) < n {
		// An unusually large event: move it to a full-size buffer.
		large := largeBufs.Get().(*[]byte)
		*large = append((*large)[:0], *s.data...)
		s.releaseData()
		s.data = large
	}
	*s.data = append(*s.data, p...)
}

// kept returns the current event's data kept so far.
func (s *SSEScanner) kept() []byte {
	if s.data == nil {
		return nil
	}
	return *s.data
}

// releaseData returns the current event's buffer to its pool.
func (s *SSEScanner) releaseData() {
	if b := s.data; b != nil {
		s.data = nil
		putBuf(b)
	}
}

// putBuf empties b, a buffer from smallBufs or largeBufs, and returns it to
// the pool its capacity belongs to, or drops it if it fits neither.
func putBuf(b *[]byte) {
	*b = (*b)[:0]
	switch c := cap(*b); {
	case c == maxEventData:
		largeBufs.Put(b)
	case c <= maxSmallBuf:
		smallBufs.Put(b)
	}
}

// dispatch is called at the blank line that ends an event.
func (s *SSEScanner) dispatch() {
	if s.dataLines > 0 && s.rel != relIrrelevant && !s.dropped {
		s.parse(s.kept())
	}
	s.releaseData()
	s.rel = relUnknown
	s.sniffN = 0
	s.dataLines = 0
	s.dropped = false
	s.nameN = 0
}

// parse reads data, the data of an event.
func (s *SSEScanner) parse(data []byte) {
	var name []byte
	if s.nameN <= len(s.name) {
		name = s.name[:s.nameN]
	}
	applyEvent(&s.u, data, name)
}

// event is the data of an event the scanner reads, as the Messages API
// sends it.
type event struct {
	Type    eventType `json:"type"`
	Message struct {
		Model string      `json:"model"`
		Usage usageObject `json:"usage"`
	} `json:"message"`
	Usage usageObject `json:"usage"`
	Error errorObject `json:"error"`
}

// applyEvent applies to u the data of an event named name ("" if it had no
// "event:" line, nil if the name was too long to keep). The event's type
// is its data's "type", or failing that its name. Data that encoding/json
// cannot decode into an event (invalid JSON, not an object, a member of
// the wrong type) is ignored; a count that is not an integer is only
// absent.
func applyEvent(u *Usage, data, name []byte) {
	d := getDecoder()
	defer d.release()
	ev := &d.ev
	*ev = event{}
	if !d.decodeObject(data, ev) {
		return
	}
	typ := ev.Type
	if typ == typeNone {
		typ = typeOf(name)
	}
	switch typ {
	case typeMessageStart:
		if ev.Message.Model != "" {
			u.Model = ev.Message.Model
		}
		ev.Message.Usage.apply(u)
	case typeMessageDelta:
		ev.Usage.apply(u)
	case typeError:
		if ev.Error.Type != "" {
			u.ErrorType = ev.Error.Type
		}
	}
}

// relevantType reports whether name is the type of an event the scanner
// reads.
func relevantType(name []byte) bool {
	switch string(name) {
	case "message_start", "message_delta", "error":
		return true
	}
	return false
}

// sniff decides, from the start of an event's data, whether the event is
// one the scanner reads. The Messages API puts "type" first; when the data
// does not start that way the answer is relRelevant, which is safe because
// the data kept is bounded.
func sniff(b []byte) relevance {
	b = bytes.TrimLeft(b, " \t")
	b, ok := bytes.CutPrefix(b, []byte("{"))
	if !ok {
		return relRelevant
	}
	b, ok = bytes.CutPrefix(bytes.TrimLeft(b, " \t"), []byte(`"type"`))
	if !ok {
		return relRelevant
	}
	b, ok = bytes.CutPrefix(bytes.TrimLeft(b, " \t"), []byte(":"))
	if !ok {
		return relRelevant
	}
	b, ok = bytes.CutPrefix(bytes.TrimLeft(b, " \t"), []byte(`"`))
	if !ok {
		return relRelevant
	}
	name, _, ok := bytes.Cut(b, []byte(`"`))
	if bytes.IndexByte(name, '\\') >= 0 {
		// Escaped, so undecided.
		return relRelevant
	}
	if !ok {
		// The name runs past the sniffed bytes, or the line ended in
		// it. Either way a long name is not one the scanner reads.
		if len(name) > len("message_start") {
			return relIrrelevant
		}
		return relRelevant
	}
	if relevantType(name) {
		return relRelevant
	}
	return relIrrelevant
}
