package mockanthropic

import (
	"container/list"
	"crypto/sha256"
	"time"
)

// promptCache is one organization's prompt cache: prefix hash → expiry.
// It is bounded without a background goroutine: entries sit in a list ordered
// by last use, and since every use sets expiry = now + ttl, the back of the
// list is also the next to expire, so expired entries are dropped from the back
// on each write and the least recently used one goes when the cache is full.
// Not safe for concurrent use; the Server's mutex guards it.
type promptCache struct {
	ttl     time.Duration
	max     int
	entries map[[sha256.Size]byte]*list.Element
	order   list.List // of *cacheEntry, front = most recently used
}

type cacheEntry struct {
	key     [sha256.Size]byte
	expires time.Time
}

func newPromptCache(ttl time.Duration, max int) *promptCache {
	return &promptCache{ttl: ttl, max: max, entries: make(map[[sha256.Size]byte]*list.Element)}
}

// has reports whether key is cached and unexpired at now. It changes nothing,
// so a request that is then rejected leaves the cache as it was.
func (c *promptCache) has(key [sha256.Size]byte, now time.Time) bool {
	e, ok := c.entries[key]
	return ok && now.Before(e.Value.(*cacheEntry).expires)
}

// put stores key, or refreshes its TTL, as of now.
func (c *promptCache) put(key [sha256.Size]byte, now time.Time) {
	exp := now.Add(c.ttl)
	if e, ok := c.entries[key]; ok {
		e.Value.(*cacheEntry).expires = exp
		c.order.MoveToFront(e)
	} else {
		c.entries[key] = c.order.PushFront(&cacheEntry{key: key, expires: exp})
	}
	for c.order.Len() > 0 {
		back := c.order.Back()
		ent := back.Value.(*cacheEntry)
		if c.order.Len() <= c.max && now.Before(ent.expires) {
			break
		}
		c.order.Remove(back)
		delete(c.entries, ent.key)
	}
}

func (c *promptCache) len() int { return c.order.Len() }

// cacheUse is what one request reads from and writes to the prompt cache.
type cacheUse struct {
	read, created int64 // cache_read_input_tokens, cache_creation_input_tokens
	input         int64 // input_tokens: the part after the last breakpoint
	hit           int   // segment index of the prefix read, -1 for none
}

// charge is what the request costs against ITPM: cache reads are free.
func (u cacheUse) charge() int64 { return u.input + u.created }

// lookup works out the request's cache use without changing the cache. The
// prefix read is the longest cached one that ends at a breakpoint or at one of
// the cacheLookback block boundaries before a breakpoint; everything after it
// up to the last breakpoint is written.
func (c *promptCache) lookup(q *request, now time.Time) cacheUse {
	total := q.totalTokens()
	if len(q.breakpoints) == 0 {
		return cacheUse{input: total, hit: -1}
	}
	last := q.breakpoints[len(q.breakpoints)-1]
	hit := -1
	// Breakpoints ascend and each window is scanned downwards, so the first
	// hit is the longest: any longer candidate of an earlier breakpoint's
	// window also lies in a window scanned before it.
	for bi := len(q.breakpoints) - 1; bi >= 0 && hit < 0; bi-- {
		b := q.breakpoints[bi]
		for i := b; i >= 0 && i > b-cacheLookback; i-- {
			if c.has(q.segments[i].cumHash, now) {
				hit = i
				break
			}
		}
	}
	read := q.prefixTokens(hit)
	prefix := q.prefixTokens(last)
	return cacheUse{read: read, created: prefix - read, input: total - prefix, hit: hit}
}

// commit stores every breakpoint's prefix and refreshes the prefix read.
func (c *promptCache) commit(q *request, u cacheUse, now time.Time) {
	if u.hit >= 0 {
		c.put(q.segments[u.hit].cumHash, now)
	}
	for _, b := range q.breakpoints {
		c.put(q.segments[b].cumHash, now)
	}
}
