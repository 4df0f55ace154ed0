package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"golang.org/x/oauth2"

	"github.com/cc-relay/caddy-cc-relay/internal/bedrock"
	"github.com/cc-relay/caddy-cc-relay/internal/vertex"
)

// One attempt on a provider key: the request translated and signed on
// the way out, the answer translated on the way back.

// savedRequest is what a provider attempt changes on the request, put
// back after it so that a retry on another key starts from the client's
// request.
type savedRequest struct {
	path, rawPath, rawQuery, host string
	hdr                           [len(providerHeaders)][]string
}

// providerHeaders are the headers a provider attempt may set or remove.
var providerHeaders = [...]string{
	"Anthropic-Beta", "Anthropic-Version", "Content-Type", "Accept", "X-Amzn-Bedrock-Accept",
	"Authorization", "X-Amz-Date", "X-Amz-Security-Token",
}

func saveRequest(r *http.Request) *savedRequest {
	s := &savedRequest{path: r.URL.Path, rawPath: r.URL.RawPath, rawQuery: r.URL.RawQuery, host: r.Host}
	for i, k := range providerHeaders {
		s.hdr[i] = r.Header[k]
	}
	return s
}

func (s *savedRequest) restore(r *http.Request) {
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery, r.Host = s.path, s.rawPath, s.rawQuery, s.host
	for i, k := range providerHeaders {
		if s.hdr[i] == nil {
			delete(r.Header, k)
		} else {
			r.Header[k] = s.hdr[i]
		}
	}
}

// setBody makes b the request's body for this attempt. The prepared copy
// of the client's body is read out so its buffer can go back to the pool.
func setBody(r *http.Request, b []byte) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	r.Body = io.NopCloser(bytes.NewReader(b))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	r.ContentLength = int64(len(b))
	r.Header.Set("Content-Length", strconv.Itoa(len(b)))
}

// send runs one attempt through next, translating the request for the
// key's upstream and its answer back into the Anthropic API's.
func (h *Handler) send(rw *attemptWriter, r *http.Request, next caddyhttp.Handler) error {
	if h.upstreams == nil {
		return next.ServeHTTP(rw, r)
	}
	u := &h.upstreams[rw.res.KeyIndex()]
	if u.kind == kindAnthropic && u.basePath == "" {
		return next.ServeHTTP(rw, r)
	}
	saved := saveRequest(r)
	defer saved.restore(r)
	var body []byte
	if rw.body != nil {
		body = rw.body.b
	}
	switch u.kind {
	case kindAnthropic:
		r.URL.Path = u.basePath + r.URL.Path
		if r.URL.RawPath != "" {
			r.URL.RawPath = u.basePath + r.URL.RawPath
		}
		return next.ServeHTTP(rw, r)
	case kindBedrock:
		return h.sendBedrock(u, rw, r, body, next)
	default:
		return h.sendVertex(u, rw, r, body, next)
	}
}

func (h *Handler) sendBedrock(u *upstream, rw *attemptWriter, r *http.Request, body []byte, next caddyhttp.Handler) error {
	model := modelOf(body)
	id, ok := u.modelID(model)
	if !ok {
		writeError(rw, http.StatusNotFound, "not_found_error", "model: this key's upstream does not serve "+strconv.Quote(model), 0)
		return nil
	}
	tb, stream, err := bedrock.TranslateBody(make([]byte, 0, len(body)+96), body, bedrock.Betas(r.Header.Values("Anthropic-Beta")))
	if err != nil {
		writeError(rw, http.StatusBadRequest, "invalid_request_error", err.Error(), 0)
		return nil
	}
	r.Header.Del("X-Api-Key")
	r.Header.Del("Authorization")
	r.Header.Del("Anthropic-Beta")
	r.Header.Del("Anthropic-Version")
	r.Header.Set("Content-Type", "application/json")
	if stream {
		r.Header.Set("Accept", bedrock.ContentType)
		r.Header.Set("X-Amzn-Bedrock-Accept", "application/json")
	} else {
		r.Header.Set("Accept", "application/json")
		r.Header.Del("X-Amzn-Bedrock-Accept")
	}
	r.URL.Path, r.URL.RawPath = bedrock.Path(id, stream)
	r.URL.Path, r.URL.RawPath = u.basePath+r.URL.Path, u.basePath+r.URL.RawPath
	r.URL.RawQuery = ""
	setBody(r, tb)
	// The signature is the last change to the request: everything it
	// covers (path, host, body, content-type, accept) is final here.
	if err := u.signer.Sign(r, u.host, tb); err != nil {
		writeError(rw, http.StatusInternalServerError, "api_error", "signing the Bedrock request failed", 0)
		return nil
	}
	bw := &bedrockWriter{o: rw}
	err = next.ServeHTTP(bw, r)
	bw.finish()
	return err
}

func (h *Handler) sendVertex(u *upstream, rw *attemptWriter, r *http.Request, body []byte, next caddyhttp.Handler) error {
	model := modelOf(body)
	count := !rw.metered
	id, ok := u.modelID(model)
	if !ok {
		writeError(rw, http.StatusNotFound, "not_found_error", "model: this key's upstream does not serve "+strconv.Quote(model), 0)
		return nil
	}
	tok, err := u.tokens.Token()
	if err != nil {
		// The token endpoint refusing the service account's key is the
		// key's fault (it is disabled and the request moves on); not
		// reaching it is not.
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
			writeError(rw, http.StatusUnauthorized, "authentication_error", "Vertex AI: the service account's access token was refused: "+re.ErrorCode, 0)
		} else {
			writeError(rw, http.StatusServiceUnavailable, "api_error", "Vertex AI: could not obtain an access token", 0)
		}
		return nil
	}
	var tb []byte
	var p string
	if count {
		tb, err = vertex.TranslateCountTokens(make([]byte, 0, len(body)+64), body, id)
		p = vertex.CountTokensPath(u.project, u.region)
	} else {
		var stream bool
		tb, stream, err = vertex.TranslateBody(make([]byte, 0, len(body)+48), body)
		p = vertex.Path(u.project, u.region, id, stream)
	}
	if err != nil {
		writeError(rw, http.StatusBadRequest, "invalid_request_error", err.Error(), 0)
		return nil
	}
	r.Header.Del("X-Api-Key")
	r.Header.Del("Anthropic-Version")
	r.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	r.Header.Set("Content-Type", "application/json")
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.basePath+p, "", ""
	r.Host = u.host
	setBody(r, tb)
	vw := &vertexWriter{o: rw}
	err = next.ServeHTTP(vw, r)
	vw.finish()
	return err
}

// errorCapture holds back an upstream error answer until it has been read
// whole, so that it can be translated before the attempt writer reads it.
type errorCapture struct {
	status int
	hdr    http.Header
	body   bytes.Buffer
}

func (c *errorCapture) write(p []byte) {
	if room := maxHeld - c.body.Len(); room > 0 {
		c.body.Write(p[:min(len(p), room)])
	}
}

// writeMapped sends the translated error to the attempt writer.
func writeMapped(o *attemptWriter, status int, body []byte) {
	hdr := o.Header()
	hdr.Del("Content-Encoding")
	hdr.Del("Transfer-Encoding")
	hdr.Del("X-Amzn-Errortype")
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	o.WriteHeader(status)
	_, _ = o.Write(body)
}

// bedrockWriter turns a Bedrock answer into the Anthropic API's before
// the attempt writer sees it: an event stream into SSE (so usage is read as for
// Anthropic and the client gets the events it expects, flushed as they
// arrive), an error into Anthropic's status and shape (so a throttled key
// cools down and the request is retried elsewhere).
type bedrockWriter struct {
	o      *attemptWriter
	mode   uint8 // 0 pass, 1 stream, 2 error
	stream bedrock.Stream
	out    []byte
	err    errorCapture
}

func (b *bedrockWriter) Header() http.Header { return b.o.Header() }

func (b *bedrockWriter) WriteHeader(code int) {
	if code < 200 {
		b.o.WriteHeader(code)
		return
	}
	hdr := b.o.Header()
	switch {
	case code >= 400:
		b.mode = 2
		b.err.status, b.err.hdr = code, hdr.Clone()
		return
	case strings.HasPrefix(hdr.Get("Content-Type"), bedrock.ContentType):
		b.mode = 1
		hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
		hdr.Set("Cache-Control", "no-cache")
		hdr.Del("Content-Length")
		hdr.Del("X-Amzn-Bedrock-Content-Type")
	}
	b.o.WriteHeader(code)
}

func (b *bedrockWriter) Write(p []byte) (int, error) {
	switch b.mode {
	case 1:
		b.out, _ = b.stream.Convert(b.out[:0], p)
		if len(b.out) > 0 {
			if _, err := b.o.Write(b.out); err != nil {
				return 0, err
			}
		}
		return len(p), nil
	case 2:
		b.err.write(p)
		return len(p), nil
	}
	return b.o.Write(p)
}

func (b *bedrockWriter) FlushError() error {
	if b.mode == 2 {
		return nil
	}
	return b.o.FlushError()
}

func (b *bedrockWriter) Flush() { _ = b.FlushError() }

func (b *bedrockWriter) Unwrap() http.ResponseWriter { return b.o }

func (b *bedrockWriter) finish() {
	if b.mode != 2 {
		return
	}
	status, body := bedrock.MapError(b.err.status, b.err.hdr, b.err.body.Bytes())
	writeMapped(b.o, status, body)
}

// vertexWriter translates Vertex AI's own (Google-shaped) errors; its
// successful answers are the Anthropic API's already.
type vertexWriter struct {
	o    *attemptWriter
	hold bool
	err  errorCapture
}

func (v *vertexWriter) Header() http.Header { return v.o.Header() }

func (v *vertexWriter) WriteHeader(code int) {
	if code >= 400 {
		v.hold = true
		v.err.status = code
		return
	}
	v.o.WriteHeader(code)
}

func (v *vertexWriter) Write(p []byte) (int, error) {
	if v.hold {
		v.err.write(p)
		return len(p), nil
	}
	return v.o.Write(p)
}

func (v *vertexWriter) FlushError() error {
	if v.hold {
		return nil
	}
	return v.o.FlushError()
}

func (v *vertexWriter) Flush() { _ = v.FlushError() }

func (v *vertexWriter) Unwrap() http.ResponseWriter { return v.o }

func (v *vertexWriter) finish() {
	if !v.hold {
		return
	}
	status, body, _ := vertex.MapError(v.err.status, v.err.body.Bytes())
	writeMapped(v.o, status, body)
}
