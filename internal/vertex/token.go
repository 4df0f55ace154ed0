package vertex

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// EarlyRefresh is how long before its expiry an access token is replaced:
// requests never carry a token that could expire on the way.
const EarlyRefresh = 5 * time.Minute

// ServiceAccount is what the relay reads from a service-account key file.
type ServiceAccount struct {
	Type        string `json:"type"`
	ProjectID   string `json:"project_id"`
	ClientEmail string `json:"client_email"`
	TokenURI    string `json:"token_uri"`
}

// ParseServiceAccount checks that key is a service-account JSON key.
func ParseServiceAccount(key []byte) (ServiceAccount, error) {
	var sa ServiceAccount
	if err := json.Unmarshal(key, &sa); err != nil {
		return sa, fmt.Errorf("credentials are not a JSON service account key")
	}
	if sa.Type != "service_account" {
		return sa, fmt.Errorf("credentials: want a service account key (type service_account), got type %q", sa.Type)
	}
	if sa.ClientEmail == "" {
		return sa, fmt.Errorf("credentials: service account key has no client_email")
	}
	return sa, nil
}

// NewTokenSource returns a TokenSource of access tokens for the service
// account in key, fetched from the key's token_uri with client (nil:
// http.DefaultClient). Tokens are cached and replaced EarlyRefresh before
// they expire, by one fetch however many requests ask at once; a request
// never fetches a token of its own.
func NewTokenSource(key []byte, client *http.Client) (oauth2.TokenSource, error) {
	if _, err := ParseServiceAccount(key); err != nil {
		return nil, err
	}
	cfg, err := google.JWTConfigFromJSON(key, Scope)
	if err != nil {
		return nil, fmt.Errorf("credentials: %v", err)
	}
	ctx := context.Background()
	if client != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, client)
	}
	return oauth2.ReuseTokenSourceWithExpiry(nil, fetcher{cfg: cfg.TokenSource, ctx: ctx}, EarlyRefresh), nil
}

// fetcher fetches a new token on every call: the JWT config's own source
// caches until 10 s before expiry, which would hand the outer cache back
// the token it wants to replace.
type fetcher struct {
	cfg func(context.Context) oauth2.TokenSource
	ctx context.Context
}

func (f fetcher) Token() (*oauth2.Token, error) {
	return f.cfg(f.ctx).Token()
}
