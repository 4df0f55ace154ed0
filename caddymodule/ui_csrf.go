package caddymodule

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"
)

// The status page's anti-forgery token: an expiry and its HMAC under a
// key drawn once per process. It needs no server-side state; the page
// receives a fresh one with every poll of its JSON, so a reload (same
// process, same key) never invalidates an open page, and a restart costs
// at most one refused click before the next poll brings a new token.
const csrfLifetime = time.Hour

var csrfKey = sync.OnceValue(func() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k) // crypto/rand.Read never fails (Go ≥ 1.24)
	return k
})

func csrfMAC(expiry []byte) []byte {
	m := hmac.New(sha256.New, csrfKey())
	m.Write([]byte("cc_relay_ui enable\x00"))
	m.Write(expiry)
	return m.Sum(nil)
}

// newCSRFToken returns a token valid until now + csrfLifetime.
func newCSRFToken(now time.Time) string {
	exp := binary.BigEndian.AppendUint64(nil, uint64(now.Add(csrfLifetime).Unix()))
	return base64.RawURLEncoding.EncodeToString(append(exp, csrfMAC(exp)...))
}

// validCSRFToken reports whether tok was made by newCSRFToken in this
// process and has not expired at now.
func validCSRFToken(tok string, now time.Time) bool {
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	if err != nil || len(b) != 8+sha256.Size {
		return false
	}
	exp, mac := b[:8], b[8:]
	if !hmac.Equal(mac, csrfMAC(exp)) {
		return false
	}
	return now.Unix() <= int64(binary.BigEndian.Uint64(exp))
}
