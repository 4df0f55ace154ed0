package caddymodule

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cc-relay/caddy-cc-relay/internal/clock"
	"github.com/cc-relay/caddy-cc-relay/internal/mockanthropic"
)

// Session affinity (issue 5), end to end: a conversation stays on the key
// that holds its prompt cache while that key's organization can take it,
// moves within its cache scope first when it cannot, and re-pins where it
// lands. Shared helpers are in helpers_test.go.

// relayAccessLog is a site's JSON access log, read back for the relay's fields.
type relayAccessLog struct{ path string }

func newRelayAccessLog(t *testing.T) *relayAccessLog {
	return &relayAccessLog{filepath.Join(t.TempDir(), "access.log")}
}

// directive is the Caddyfile log block writing this file.
func (l relayAccessLog) directive() string {
	return fmt.Sprintf("log {\n\t\toutput file %s\n\t\tformat json\n\t}", l.path)
}

type relayLogEntry struct {
	Status  int    `json:"status"`
	Key     string `json:"cc_relay_key"`
	Sticky  string `json:"cc_relay_sticky"`
	Session string `json:"cc_relay_session"`
	Client  string `json:"cc_relay_client"`
}

// entries waits (bounded) until the log holds n entries and returns them:
// an entry is written as its handler returns, which may be just after the
// client has read the answer.
func (l relayAccessLog) entries(t *testing.T, n int) []relayLogEntry {
	t.Helper()
	var out []relayLogEntry
	pollUntil(t, fmt.Sprintf("%d access log entries", n), func() bool {
		out = out[:0]
		f, err := os.Open(l.path)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var e relayLogEntry
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				out = append(out, e)
			}
		}
		return len(out) >= n
	})
	return out
}

// startSticky runs the pool block body in front of up, writing the site's
// access log to log unless it is nil, and returns a client whose test
// fails if it leaves a goroutine behind.
func startSticky(t *testing.T, up *recUpstream, log *relayAccessLog, body string) *relayClient {
	t.Helper()
	proxy := proxyTo(up)
	if log != nil {
		proxy += "\n\t" + log.directive()
	}
	startRelay(t, relaySite(body, proxy))
	c := newRelayClient(t)
	checkLeaks(t, c)
	return c
}

// stickyMock is a mock upstream without limits whose keys are each their
// own organization unless orgOf says otherwise.
func stickyMock(t *testing.T, keys []string, orgOf func(key string) string) (*mockanthropic.Server, *recUpstream, *clock.Fake) {
	fake := useFakeClock(t)
	m := map[string]string{}
	for _, k := range keys {
		o := "org-" + k
		if orgOf != nil {
			o = orgOf(k)
		}
		m[k] = o
	}
	mock := mockOn(fake, nil, m)
	return mock, newRecUpstream(t, mock), fake
}

// twoOrgs puts the keys whose secret contains marker in organization in,
// the others in out.
func twoOrgs(marker, in, out string) func(key string) string {
	return func(k string) string {
		if strings.Contains(k, marker) {
			return in
		}
		return out
	}
}

// sessionTurn sends one turn of session s, named by both the header and
// metadata.user_id, as token.
func (c *relayClient) sessionTurn(t *testing.T, token, s, prompt string, stream bool) relayResult {
	t.Helper()
	return c.mustSend(t, token, ccBody(legacyUserID(s), prompt, stream), "X-Claude-Code-Session-Id", s)
}

func keyLines(keys ...string) string {
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "key %s {\n\t\t\tname %s\n\t\t}\n\t\t", k, strings.TrimPrefix(k, "sk-"))
	}
	return b.String()
}

// TestStickySessionIdentity: each way Claude Code names a session pins it:
// the X-Claude-Code-Session-Id header, metadata.user_id in its legacy and
// JSON forms, and, with neither, the conversation's start (system prompt and
// first message) as the conversation grows. Round robin would otherwise
// move every request to the next key.
func TestStickySessionIdentity(t *testing.T) {
	keys := []string{"sk-id-1", "sk-id-2", "sk-id-3", "sk-id-4"}
	_, up, _ := stickyMock(t, keys, nil)
	log := newRelayAccessLog(t)
	c := startSticky(t, up, log, `sticky_id_pool {
		client_token ct-id
		strategy round_robin
		`+keyLines(keys...)+`
	}`)

	type session struct {
		name string
		req  func(turn int) (body string, hdr []string)
	}
	// A conversation: its first message, then an answer and a follow-up
	// per turn; the newest message carries the cache breakpoint.
	conv := []string{"Explain the relay"}
	grow := func(turn int) (string, []string) {
		for len(conv) < 2*turn+1 {
			conv = append(conv, fmt.Sprintf("message %d", len(conv)))
		}
		return conv[2*turn], conv[:2*turn]
	}
	sessions := []session{
		{"header", func(turn int) (string, []string) {
			return ccBody("", "header turn "+strconv.Itoa(turn), true), []string{"X-Claude-Code-Session-Id", sessionUUID(10)}
		}},
		{"legacy user_id", func(turn int) (string, []string) {
			return ccBody(legacyUserID(sessionUUID(11)), "legacy turn "+strconv.Itoa(turn), false), nil
		}},
		{"json user_id", func(turn int) (string, []string) {
			return ccBody(jsonUserID(sessionUUID(12)), "json turn "+strconv.Itoa(turn), true), nil
		}},
		{"header over user_id", func(turn int) (string, []string) {
			// A user_id naming another session on every turn: the header wins.
			return ccBody(legacyUserID(sessionUUID(100+turn)), "both turn "+strconv.Itoa(turn), false),
				[]string{"X-Claude-Code-Session-Id", sessionUUID(13)}
		}},
		{"conversation prefix", func(turn int) (string, []string) {
			// The same start, a longer conversation each turn.
			last, history := grow(turn)
			return ccBody("", last, false, history...), nil
		}},
	}
	pinned := map[string]string{}
	n := 0
	for turn := 0; turn < 4; turn++ {
		for _, s := range sessions {
			body, hdr := s.req(turn)
			r := c.mustSend(t, "ct-id", body, hdr...)
			n++
			if r.status != 200 {
				t.Fatalf("%s turn %d: %d %s", s.name, turn, r.status, r.body)
			}
			key := r.via()
			if turn == 0 {
				pinned[s.name] = key
			} else if key != pinned[s.name] {
				t.Fatalf("%s turn %d went to %s, pinned to %s", s.name, turn, key, pinned[s.name])
			}
		}
	}
	// Five new sessions under round robin over four keys: all keys in use.
	used := map[string]bool{}
	for _, k := range pinned {
		used[k] = true
	}
	if len(used) != 4 {
		t.Fatalf("new sessions were not spread: %v", pinned)
	}
	entries := log.entries(t, n)
	for i, e := range entries {
		want := "hit"
		if i < len(sessions) {
			want = "new"
		}
		if e.Sticky != want || e.Key == "" || e.Client != "client-"+shortHash("ct-id") {
			t.Fatalf("access log entry %d: %+v, want sticky %q with the key", i, e, want)
		}
	}
	if e := entries[0]; e.Session != sessionUUID(10) {
		t.Fatalf("access log session %q, want the header's", e.Session)
	}
	if e := entries[1]; e.Session != sessionUUID(11) {
		t.Fatalf("access log session %q, want the legacy user_id's", e.Session)
	}

	// The same session named in either user_id form, or in the header, is
	// one session.
	s := sessionUUID(14)
	first := c.mustSend(t, "ct-id", ccBody(legacyUserID(s), "a", false)).via()
	for _, r := range []relayResult{
		c.mustSend(t, "ct-id", ccBody(jsonUserID(s), "b", false)),
		c.mustSend(t, "ct-id", ccBody("", "c", false), "X-Claude-Code-Session-Id", s),
	} {
		if k := r.via(); k != first {
			t.Fatalf("session %s named another way went to %s, not %s", s, k, first)
		}
	}
	// Different sessions with the same conversation start are different
	// sessions: the start is only the last resort.
	a := c.mustSend(t, "ct-id", ccBody(legacyUserID(sessionUUID(15)), "same start", false)).via()
	b := c.mustSend(t, "ct-id", ccBody(legacyUserID(sessionUUID(16)), "same start", false)).via()
	if a == b {
		t.Fatalf("two sessions with one conversation start shared key %s under round robin", a)
	}
}

// TestStickyPerClient: a session id is scoped to the client token: two
// clients sending the same id are two sessions.
func TestStickyPerClient(t *testing.T) {
	keys := []string{"sk-pc-1", "sk-pc-2"}
	_, up, _ := stickyMock(t, keys, nil)
	c := startSticky(t, up, nil, `sticky_client_pool {
		client_token ct-alice alice
		client_token ct-bob bob
		strategy round_robin
		`+keyLines(keys...)+`
	}`)
	s := sessionUUID(20)
	alice := c.sessionTurn(t, "ct-alice", s, "hi", false).via()
	bob := c.sessionTurn(t, "ct-bob", s, "hi", false).via()
	if alice == bob {
		t.Fatalf("bob's request joined alice's session on %s (round robin gives a new session the other key)", alice)
	}
	for i := 0; i < 4; i++ {
		if k := c.sessionTurn(t, "ct-alice", s, "more", false).via(); k != alice {
			t.Fatalf("alice moved to %s", k)
		}
		if k := c.sessionTurn(t, "ct-bob", s, "more", false).via(); k != bob {
			t.Fatalf("bob moved to %s", k)
		}
	}
}

// TestStickyOff: with sticky off, a session's requests follow the strategy.
func TestStickyOff(t *testing.T) {
	keys := []string{"sk-so-1", "sk-so-2", "sk-so-3"}
	_, up, _ := stickyMock(t, keys, nil)
	log := newRelayAccessLog(t)
	c := startSticky(t, up, log, `sticky_off_pool {
		client_auth off
		strategy round_robin
		sticky off
		`+keyLines(keys...)+`
	}`)
	s := sessionUUID(30)
	for i := 0; i < 6; i++ {
		if r := c.sessionTurn(t, "", s, "turn "+strconv.Itoa(i), false); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	if cnt := up.count(); cnt["sk-so-1"] != 2 || cnt["sk-so-2"] != 2 || cnt["sk-so-3"] != 2 {
		t.Fatalf("sticky off: %v, want round robin 2/2/2", cnt)
	}
	for _, e := range log.entries(t, 6) {
		if e.Sticky != "none" {
			t.Fatalf("sticky off logged %q", e.Sticky)
		}
	}
}

// TestStickyLeastLoaded: under least_loaded (which balances idle keys by
// rotating ties), a session stays on its key while other sessions spread.
func TestStickyLeastLoaded(t *testing.T) {
	keys := []string{"sk-ll-s1", "sk-ll-s2", "sk-ll-s3"}
	_, up, _ := stickyMock(t, keys, nil)
	c := startSticky(t, up, nil, `sticky_ll_pool {
		client_auth off
		`+keyLines(keys...)+`
	}`)
	s := sessionUUID(40)
	var home string
	others := map[string]int{}
	for i := 0; i < 12; i++ {
		r := c.sessionTurn(t, "", s, "turn "+strconv.Itoa(i), true)
		k := r.via()
		if i == 0 {
			home = k
		} else if k != home {
			t.Fatalf("turn %d moved from %s to %s", i, home, k)
		}
		o := c.mustSend(t, "", ccBody(legacyUserID(sessionUUID(1000+i)), "one-off", false))
		others[o.via()]++
	}
	if len(others) != 3 {
		t.Fatalf("new sessions did not spread over the keys: %v", others)
	}
}

// TestStickyMovesWhenOrgFull: when the pinned key's organization has no
// requests left, the session moves to another organization (its own scope,
// the organization, cannot take it either), re-pins there and stays even
// after the old organization refilled. No request is ever sent beyond a
// budget: the upstream refuses nothing.
func TestStickyMovesWhenOrgFull(t *testing.T) {
	keys := []string{"sk-mv-a1", "sk-mv-a2", "sk-mv-b1"}
	mock, up, fake := stickyMock(t, keys, twoOrgs("-a", "org-a", "org-b"))
	log := newRelayAccessLog(t)
	c := startSticky(t, up, log, `sticky_move_pool {
		client_auth off
		strategy round_robin
		key sk-mv-a1 {
			name a1
			org A
			rpm 3
		}
		key sk-mv-a2 {
			name a2
			org A
		}
		key sk-mv-b1 {
			name b1
			org B
			rpm 100
		}
	}`)
	s := sessionUUID(50)
	want := []struct{ key, sticky string }{
		{"a1", "new"}, {"a1", "hit"}, {"a1", "hit"}, // org A's three requests
		{"b1", "moved"}, {"b1", "hit"},
	}
	for i, w := range want {
		r := c.sessionTurn(t, "", s, "turn "+strconv.Itoa(i), false)
		if r.status != 200 || r.via() != w.key {
			t.Fatalf("turn %d: %d via %q, want %s", i, r.status, r.via(), w.key)
		}
	}
	fake.Advance(time.Minute) // org A is full again; the session stays put
	if r := c.sessionTurn(t, "", s, "later", false); r.via() != "b1" {
		t.Fatalf("after org A refilled the session went back to %q", r.via())
	}
	want = append(want, struct{ key, sticky string }{"b1", "hit"})
	for i, e := range log.entries(t, len(want)) {
		if e.Key != want[i].key || e.Sticky != want[i].sticky {
			t.Fatalf("access log entry %d: key %q sticky %q, want %s %s", i, e.Key, e.Sticky, want[i].key, want[i].sticky)
		}
	}
	if st := mock.Stats(); st.Total.RateLimited != 0 {
		t.Fatalf("the upstream refused %d requests: stickiness overran a budget", st.Total.RateLimited)
	}
}

// TestStickyScopeFirst: when the pinned key itself fails (revoked), the
// session moves to a key sharing its prompt cache first: one of the same
// workspace when keys name workspaces, else of the same organization,
// ahead of what the strategy would pick; when the whole organization
// answers 429 it leaves the organization and re-pins.
func TestStickyScopeFirst(t *testing.T) {
	t.Run("workspace", func(t *testing.T) {
		keys := []string{"sk-ws-a1", "sk-ws-a2", "sk-ws-a3", "sk-ws-b1", "sk-ws-b2"}
		mock, up, fake := stickyMock(t, keys, twoOrgs("-a", "org-a", "org-b"))
		log := newRelayAccessLog(t)
		c := startSticky(t, up, log, `sticky_ws_pool {
		client_auth off
		strategy round_robin
		key sk-ws-a1 {
			name a1
			org A
			workspace w1
		}
		key sk-ws-a2 {
			name a2
			org A
			workspace w2
		}
		key sk-ws-a3 {
			name a3
			org A
			workspace w1
		}
		key sk-ws-b1 {
			name b1
			org B
		}
		key sk-ws-b2 {
			name b2
			org B
		}
	}`)
		if k := keySnap(t, "sticky_ws_pool", "a1"); k.Scope != "w1" {
			t.Fatalf("a1 cache scope %q, want w1 (workspace parsed from the Caddyfile)", k.Scope)
		}
		s := sessionUUID(60)
		turn := 0
		send := func() string {
			turn++
			r := c.sessionTurn(t, "", s, "turn "+strconv.Itoa(turn), true)
			if r.status != 200 {
				t.Fatalf("turn %d: %d %s", turn, r.status, r.body)
			}
			return r.via()
		}
		if k := send(); k != "a1" {
			t.Fatalf("first turn on %s, want a1", k)
		}
		mock.Revoke("sk-ws-a1")
		// Round robin would pick a2 next; a3 shares a1's workspace.
		if k := send(); k != "a3" {
			t.Fatalf("after a1 was revoked the session went to %s, want a3 (same workspace)", k)
		}
		if k := send(); k != "a3" {
			t.Fatalf("not re-pinned on a3: %s", k)
		}
		mock.Force429("org-a", fake.Now().Add(time.Hour))
		moved := send()
		if !strings.HasPrefix(moved, "b") {
			t.Fatalf("org A refusing: the session went to %s, want org B", moved)
		}
		if k := send(); k != moved {
			t.Fatalf("not re-pinned on %s: %s", moved, k)
		}
		want := []string{"new", "scope", "hit", "moved", "hit"}
		for i, e := range log.entries(t, len(want)) {
			if e.Sticky != want[i] {
				t.Fatalf("access log entry %d sticky %q, want %q (%+v)", i, e.Sticky, want[i], e)
			}
		}
		if cnt := up.count(); cnt["sk-ws-a2"] != 0 {
			t.Fatalf("a key of another workspace was used: %v", cnt)
		}
	})
	t.Run("organization", func(t *testing.T) {
		keys := []string{"sk-os-c1", "sk-os-d1", "sk-os-d2", "sk-os-c2"}
		mock, up, _ := stickyMock(t, keys, twoOrgs("-c", "org-c", "org-d"))
		c := startSticky(t, up, nil, `sticky_org_pool {
		client_auth off
		strategy round_robin
		key sk-os-c1 {
			name c1
			org C
		}
		key sk-os-d1 {
			name d1
			org D
		}
		key sk-os-d2 {
			name d2
			org D
		}
		key sk-os-c2 {
			name c2
			org C
		}
	}`)
		s := sessionUUID(61)
		if r := c.mustSend(t, "", ccBody(legacyUserID(s), "one", false)); r.via() != "c1" {
			t.Fatalf("first turn on %s", r.via())
		}
		mock.Revoke("sk-os-c1")
		for i := 0; i < 3; i++ {
			if r := c.mustSend(t, "", ccBody(legacyUserID(s), "more", false)); r.status != 200 || r.via() != "c2" {
				t.Fatalf("turn %d: %d via %s, want c2 (same organization)", i, r.status, r.via())
			}
		}
	})
}

// TestStickySpreadsNewSessions: many sessions starting at once spread
// evenly over the keys (they are placed by the strategy, in flight counted),
// and each stays where it was placed.
func TestStickySpreadsNewSessions(t *testing.T) {
	fake := useFakeClock(t)
	gate, release, arrived := gatedGate()
	keys := map[string]string{"sk-sp-1": "org-1", "sk-sp-2": "org-2", "sk-sp-3": "org-3", "sk-sp-4": "org-4"}
	mock := mockanthropic.New(mockanthropic.Config{Keys: keys, Now: fake.Now, Gate: gate})
	up := newRecUpstream(t, mock)
	c := startSticky(t, up, nil, `sticky_spread_pool {
		client_auth off
		key sk-sp-1
		key sk-sp-2
		key sk-sp-3
		key sk-sp-4
	}`)
	const n = 40
	first := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			s := sessionUUID(200 + i)
			r := c.send(context.Background(), "", ccBody(legacyUserID(s), "start", false), "X-Claude-Code-Session-Id", s)
			if r.err == nil && r.status == 200 {
				first[i] = r.via()
			}
		}(i)
	}
	for i := 0; i < n; i++ {
		<-arrived // every request is in flight at the upstream at once
	}
	per := up.count()
	close(release)
	wg.Wait()
	for k := range keys {
		if per[k] != n/len(keys) {
			t.Fatalf("concurrent new sessions per key %v, want %d each", per, n/len(keys))
		}
	}
	for i := 0; i < n; i++ {
		if first[i] == "" {
			t.Fatalf("session %d failed", i)
		}
		s := sessionUUID(200 + i)
		if k := c.sessionTurn(t, "", s, "again", false).via(); k != first[i] {
			t.Fatalf("session %d moved from %s to %s", i, first[i], k)
		}
	}
}

// TestStickyRespectsBudget: a pinned session never takes a key past its
// budget: it moves when the key is full, and when the pool is full it gets
// the relay's 429 without the upstream being asked.
func TestStickyRespectsBudget(t *testing.T) {
	fake := useFakeClock(t)
	keys := map[string]string{"sk-bu-1": "org-1", "sk-bu-2": "org-2", "sk-bu-3": "org-3"}
	mock := mockOn(fake, []mockanthropic.Org{{ID: "org-1", RPM: 2}, {ID: "org-2", RPM: 2}, {ID: "org-3", RPM: 2}}, keys)
	up := newRecUpstream(t, mock)
	c := startSticky(t, up, nil, `sticky_budget_pool {
		client_auth off
		key sk-bu-1 {
			rpm 2
		}
		key sk-bu-2 {
			rpm 2
		}
		key sk-bu-3 {
			rpm 2
		}
	}`)
	s := sessionUUID(70)
	var path []string
	for i := 0; i < 6; i++ {
		r := c.sessionTurn(t, "", s, "turn "+strconv.Itoa(i), false)
		if r.status != 200 {
			t.Fatalf("turn %d: %d %s", i, r.status, r.body)
		}
		path = append(path, r.via())
	}
	for i := 0; i < 6; i += 2 {
		if path[i] != path[i+1] || (i > 0 && path[i] == path[i-1]) {
			t.Fatalf("session path %v, want two turns per key, then a move", path)
		}
	}
	r := c.sessionTurn(t, "", s, "one too many", false)
	if r.status != 429 || r.header.Get("Retry-After") != "30" {
		t.Fatalf("full pool: %d Retry-After %q, want the relay's 429 after 30", r.status, r.header.Get("Retry-After"))
	}
	if st := mock.Stats(); st.Total.RateLimited != 0 || st.Total.Accepted != 6 {
		t.Fatalf("upstream accepted %d, refused %d: want 6 and none", st.Total.Accepted, st.Total.RateLimited)
	}
	for k, n := range up.count() {
		if n != 2 {
			t.Fatalf("key %s got %d requests with rpm 2", k, n)
		}
	}
}
