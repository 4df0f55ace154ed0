package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/cc-relay/caddy-cc-relay/internal/jsonedit"
	"github.com/cc-relay/caddy-cc-relay/internal/modeltable"
	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// Routing: which keys of a pool can serve a request at all.

// endpoint classes a request is routed by.
const (
	routeMessages = iota
	routeCountTokens
	routeOther
)

// eligibility caches, per route and model, which keys can serve it.
type eligibility struct {
	mu sync.Mutex
	m  map[routeModel][]bool
}

// routeModel keys the cache; a struct key, unlike a joined string, costs
// no allocation per request.
type routeModel struct {
	route int
	model string
}

// maxEligibility bounds the cache: model names come from clients.
const maxEligibility = 1024

// route limits a request to the keys that can serve it. It answers the
// request itself (and returns true) when no key can: /v1/models from the
// model tables, anything else with 404.
func (h *Handler) route(w http.ResponseWriter, r *http.Request, req *keypool.Request, body []byte, model string, metered bool) bool {
	rt := routeOther
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case metered:
		rt = routeMessages
	case r.Method == http.MethodPost && p == "/v1/messages/count_tokens":
		rt = routeCountTokens
		model = modelOf(body)
	}
	only := h.eligible(rt, model)
	for _, ok := range only {
		if ok {
			req.Only = only
			return false
		}
	}
	if rt == routeOther && r.Method == http.MethodGet && p == "/v1/models" {
		h.metrics.answered("ok")
		h.answerModels(w)
		return true
	}
	h.metrics.answered("bad_request")
	msg := "no upstream of this relay serves " + r.Method + " " + p
	if rt != routeOther {
		msg = "model: no upstream of this relay serves " + strconv.Quote(model)
	}
	writeError(w, http.StatusNotFound, "not_found_error", msg, 0)
	return true
}

func (h *Handler) eligible(rt int, model string) []bool {
	key := routeModel{rt, model}
	e := h.elig
	e.mu.Lock()
	only, ok := e.m[key]
	e.mu.Unlock()
	if ok {
		return only
	}
	only = make([]bool, len(h.upstreams))
	for i := range h.upstreams {
		u := &h.upstreams[i]
		switch {
		case u.kind == kindAnthropic:
			only[i] = true
		case rt == routeMessages || rt == routeCountTokens && u.kind == kindVertex:
			_, only[i] = u.modelID(model)
		}
	}
	e.mu.Lock()
	if len(e.m) < maxEligibility {
		e.m[key] = only
	}
	e.mu.Unlock()
	return only
}

// answerModels lists the models the pool's provider keys serve, in the
// shape of the API's GET /v1/models.
func (h *Handler) answerModels(w http.ResponseWriter) {
	type model struct {
		Type        string `json:"type"`
		ID          string `json:"id"`
		DisplayName string `json:"display_name"`
		CreatedAt   string `json:"created_at"`
	}
	var data []model
	for _, name := range modeltable.Models {
		for i := range h.upstreams {
			if _, ok := h.upstreams[i].modelID(name); ok {
				data = append(data, model{Type: "model", ID: name, DisplayName: name, CreatedAt: "2025-01-01T00:00:00Z"})
				break
			}
		}
	}
	if data == nil {
		data = []model{}
	}
	out := map[string]any{"data": data, "has_more": false, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	b, _ := json.Marshal(out)
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// modelOf reads the request body's model.
func modelOf(body []byte) string {
	v, ok := jsonedit.Get(body, "model")
	if !ok {
		return ""
	}
	var m string
	_ = json.Unmarshal(v, &m)
	return m
}
