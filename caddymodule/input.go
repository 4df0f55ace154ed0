package caddymodule

import (
	"net/url"
	"path"
	"strings"
	"unicode/utf8"
)

// Hostile or odd input the relay refuses or bounds before it spends a key
// on it. README.md ("Hostile input and a broken upstream") says why each.

// maxClientString bounds a client-chosen string (a model name, a session
// id) where it lands in the access log's fields and the placeholders.
const maxClientString = 256

// messagesPath is the one spelling of the Messages endpoint the relay
// meters.
const messagesPath = "/v1/messages"

// nonCanonicalMessages reports a path that is not messagesPath as sent but
// names it once cleaned: doubled or trailing slashes, dot segments,
// percent-encoded letters, backslashes, other letter case. A typical
// "path /v1/messages*" matcher lets them through and an upstream may well
// serve them as the Messages endpoint, but the relay would not meter them;
// and metering a cleaned path while the raw one goes upstream would meter
// something other than what the upstream sees. They are refused instead.
// Paths under /v1/messages/ (count_tokens, batches) are other endpoints;
// their non-canonical spellings pass as they are, like the canonical ones.
func nonCanonicalMessages(u *url.URL) bool {
	raw := u.EscapedPath()
	if raw == messagesPath {
		return false
	}
	p := raw
	// Undo every layer of percent-encoding an upstream or a proxy in
	// between might undo.
	for range 4 {
		if !strings.Contains(p, "%") {
			break
		}
		d, err := url.PathUnescape(p)
		if err != nil {
			break
		}
		p = d
	}
	p = strings.ReplaceAll(p, `\`, "/")
	return strings.EqualFold(path.Clean("/"+p), messagesPath)
}

// acceptedEncoding reports whether a request body with this
// Content-Encoding can be read: only an uncompressed one. The relay must
// read a Messages body to meter it, and max_body must bound what it holds
// after any decoding; the Anthropic API itself takes uncompressed bodies.
func acceptedEncoding(ce []string) bool {
	for _, v := range ce {
		if v = strings.TrimSpace(v); v != "" && !strings.EqualFold(v, "identity") {
			return false
		}
	}
	return true
}

// capString bounds a client-chosen string for a log field or placeholder,
// cutting at a UTF-8 boundary and marking the cut.
func capString(s string) string {
	if len(s) <= maxClientString {
		return s
	}
	n := maxClientString - len("…")
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
