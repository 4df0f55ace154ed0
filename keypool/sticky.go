package keypool

// stickyTable pins conversations (by a 64-bit hash of client and session)
// to the key that holds their prompt cache. It is an LRU with expiry, kept
// in one slice with an index map and an intrusive list, so it needs no
// goroutine and no allocation per lookup: expired entries are dropped when
// met and the least recently used one is reused when the table is full.
// Guarded by the pool's lock.
type stickyTable struct {
	idx     map[uint64]int32
	entries []stickyEntry
	free    []int32
	head    int32 // most recently used, -1 when empty
	tail    int32 // least recently used
}

type stickyEntry struct {
	hash       uint64
	ks         *keyState
	expires    int64
	prev, next int32
	// The session's last request: body size and model class, to price
	// the next turn of a conversation by what it added.
	bytes, class int32
	// shared is when this instance last wrote the pin to the shared
	// store (unix ns; 0 never), which keeps it alive there.
	shared int64
}

// stickyEntrySize is the approximate memory one pinned session costs: the
// entry (48 bytes) plus a map slot (8-byte key, 4-byte value, control byte
// and load-factor slack), about 72 bytes in all.
const stickyEntrySize = 72

func newStickyTable() *stickyTable {
	return &stickyTable{idx: map[uint64]int32{}, head: -1, tail: -1}
}

func (t *stickyTable) len() int { return len(t.idx) }

func (t *stickyTable) unlink(i int32) {
	e := &t.entries[i]
	if e.prev >= 0 {
		t.entries[e.prev].next = e.next
	} else {
		t.head = e.next
	}
	if e.next >= 0 {
		t.entries[e.next].prev = e.prev
	} else {
		t.tail = e.prev
	}
}

func (t *stickyTable) pushFront(i int32) {
	e := &t.entries[i]
	e.prev, e.next = -1, t.head
	if t.head >= 0 {
		t.entries[t.head].prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}

func (t *stickyTable) remove(i int32) {
	e := &t.entries[i]
	t.unlink(i)
	delete(t.idx, e.hash)
	if e.ks != nil {
		e.ks.sticky--
	}
	e.ks = nil
	t.free = append(t.free, i)
}

// get returns the key a session is pinned to, refreshing its expiry, or
// nil; and the body size and class of the session's last request.
func (t *stickyTable) get(h uint64, now, ttl int64) (*keyState, int32, int32) {
	i, ok := t.idx[h]
	if !ok {
		return nil, 0, 0
	}
	e := &t.entries[i]
	if e.expires <= now || e.ks == nil || e.ks.refs == 0 {
		t.remove(i)
		return nil, 0, 0
	}
	e.expires = now + ttl
	t.unlink(i)
	t.pushFront(i)
	return e.ks, e.bytes, e.class
}

// pin sets the key of a session and the body size and class of its
// request, evicting expired or least recently used sessions to stay within
// maxEntries.
func (t *stickyTable) pin(h uint64, ks *keyState, now, ttl int64, maxEntries int, bytes, class int32) {
	if i, ok := t.idx[h]; ok {
		e := &t.entries[i]
		// Follow the conversation, not a small side request of another
		// model (Claude Code's Haiku calls share the session).
		if class == e.class || bytes >= e.bytes {
			e.bytes, e.class = bytes, class
		}
		if e.ks != ks {
			if e.ks != nil {
				e.ks.sticky--
			}
			ks.sticky++
			e.ks = ks
		}
		e.expires = now + ttl
		t.unlink(i)
		t.pushFront(i)
		return
	}
	// Drop expired sessions from the cold end; then make room.
	for t.tail >= 0 && t.entries[t.tail].expires <= now {
		t.remove(t.tail)
	}
	for len(t.idx) >= maxEntries && t.tail >= 0 {
		t.remove(t.tail)
	}
	if maxEntries <= 0 {
		return
	}
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		t.entries = append(t.entries, stickyEntry{})
		i = int32(len(t.entries) - 1)
	}
	t.entries[i] = stickyEntry{hash: h, ks: ks, expires: now + ttl, bytes: bytes, class: class}
	ks.sticky++
	t.idx[h] = i
	t.pushFront(i)
}

// shareDue reports whether the session's pin should be written to the
// shared store now: force (it changed), never written by this instance, or
// last written more than half its ttl ago (the store's copy would expire
// while the conversation goes on here). It records the write.
func (t *stickyTable) shareDue(h uint64, now, ttl int64, force bool) bool {
	i, ok := t.idx[h]
	if !ok {
		return force
	}
	e := &t.entries[i]
	if !force && e.shared != 0 && now-e.shared < ttl/2 {
		return false
	}
	e.shared = now
	return true
}

// dropKey forgets every session pinned to ks (the key left the config).
func (t *stickyTable) dropKey(ks *keyState) {
	for i := t.head; i >= 0; {
		next := t.entries[i].next
		if t.entries[i].ks == ks {
			t.remove(i)
		}
		i = next
	}
}

// StickyOutcome says how a request's session pin was used.
type StickyOutcome uint8

// Sticky outcomes.
const (
	StickyNone  StickyOutcome = iota // no session, or stickiness off
	StickyNew                        // first request of a session
	StickyHit                        // stayed on its pinned key
	StickyScope                      // moved within its cache scope
	StickyMoved                      // moved out of its cache scope
)

var stickyNames = [...]string{"none", "new", "hit", "scope", "moved"}

func (s StickyOutcome) String() string { return stickyNames[s] }
