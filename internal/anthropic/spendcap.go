package anthropic

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// SpendCap recognises a 429 that is about the organization's spend cap
// rather than its rate limits: it has no retry-after, and its message
// speaks of usage or spend limits. The upstream states the date access
// returns ("You will regain access on 2026-12-01 at 00:00 UTC"); that date
// is returned when it can be read and lies after now, else the zero time.
func SpendCap(h http.Header, body []byte, now time.Time) (time.Time, bool) {
	if h.Get("Retry-After") != "" {
		return time.Time{}, false
	}
	var e wire
	_ = json.Unmarshal(body, &e)
	text := strings.ToLower(e.Error.Type + " " + e.Error.Message)
	if !strings.Contains(text, "spend") && !strings.Contains(text, "usage limit") && !strings.Contains(text, "regain access") {
		return time.Time{}, false
	}
	if i := strings.Index(text, "regain access on "); i >= 0 {
		rest := text[i+len("regain access on "):]
		if len(rest) >= 10 {
			if t, err := time.Parse("2006-01-02", rest[:10]); err == nil {
				if j := strings.Index(rest, " at "); j == 10 && len(rest) >= 19 {
					if hm, err := time.Parse("15:04", rest[14:19]); err == nil {
						t = t.Add(time.Duration(hm.Hour())*time.Hour + time.Duration(hm.Minute())*time.Minute)
					}
				}
				if t.After(now) {
					return t, true
				}
			}
		}
	}
	return time.Time{}, true
}
