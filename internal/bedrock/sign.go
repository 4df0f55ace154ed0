package bedrock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Credentials are an IAM principal's static credentials.
type Credentials struct {
	AccessKeyID     string
	SecretAccessKey string
	// SessionToken is set for temporary credentials.
	SessionToken string
}

// Signer signs Bedrock requests with SigV4.
type Signer struct {
	Region string
	Creds  Credentials
	// Now is the signing clock; default time.Now.
	Now    func() time.Time
	signer *v4.Signer
}

// NewSigner returns a signer for region.
func NewSigner(region string, creds Credentials) *Signer {
	return &Signer{Region: region, Creds: creds, signer: v4.NewSigner()}
}

// signedHeaders are the only request headers covered by the signature
// (with host and the x-amz-* headers the signer adds). Whatever a proxy
// adds or changes later (X-Forwarded-*, Via, User-Agent) then cannot break
// it.
var signedHeaders = []string{"Content-Type", "Accept", "X-Amzn-Bedrock-Accept"}

// Sign signs r, whose body is body, as sent to host (the Host header as it
// will go out, "host:port"). It is the last change made to the request's
// path, host, signed headers and body: the signature covers them. The
// signature is computed over a minimal copy of r and its headers set on r.
func (s *Signer) Sign(r *http.Request, host string, body []byte) error {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sum := sha256.Sum256(body)
	cp := &http.Request{
		Method: r.Method,
		// No scheme: the signer would strip a default port from the host,
		// and the Host header goes out with it.
		URL:    &url.URL{Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Host:   host,
		Header: http.Header{},
	}
	for _, h := range signedHeaders {
		if v := r.Header.Values(h); len(v) > 0 {
			cp.Header[h] = v
		}
	}
	creds := aws.Credentials{AccessKeyID: s.Creds.AccessKeyID, SecretAccessKey: s.Creds.SecretAccessKey, SessionToken: s.Creds.SessionToken}
	sg := s.signer
	if sg == nil {
		sg = v4.NewSigner()
	}
	if err := sg.SignHTTP(context.Background(), creds, cp, hex.EncodeToString(sum[:]), Service, s.Region, now().UTC()); err != nil {
		return err
	}
	r.Host = host
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token"} {
		if v := cp.Header.Get(h); v != "" {
			r.Header.Set(h, v)
		} else {
			r.Header.Del(h)
		}
	}
	return nil
}
