package caddymodule

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the admin API module admin.api.cc_relay. Caddy mounts every
// registered admin.api.* module on its admin endpoint, so importing this
// package is all it takes:
//
//	GET  /cc_relay/pools                             every live pool
//	GET  /cc_relay/pools/<pool>                      one pool
//	POST /cc_relay/pools/<pool>/keys/<key>/enable    clear a key's cooldowns and disabled state
//	GET  /cc_relay/pools/<pool>/clients              the pool's clients: limits, spend, budget
//	POST /cc_relay/pools/<pool>/clients/<name>/reset start a client's spend and limits over
//
// A disabled key's next probe shows under "probes" of its pool.
//
// Pools and keys are shown by name, never by secret.
type AdminAPI struct {
	logger *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.cc_relay",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision runs for every configuration Caddy loads, with that
// configuration's context. The admin endpoint's /metrics serves that
// context's registry, so the relay's collectors are registered into it
// here too: they stay exposed even when the configuration holds no cc_relay
// handler yet, or a load failed after replacing the admin endpoint.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	registerCollectors(ctx.GetMetricsRegistry(), a.logger)
	return nil
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/cc_relay/pools", Handler: caddy.AdminHandlerFunc(a.handlePools)},
		{Pattern: "/cc_relay/pools/", Handler: caddy.AdminHandlerFunc(a.handlePools)},
	}
}

// PoolStatus is one pool as the admin API shows it: its name and a
// snapshot of its state (keys by name with their state, limits, remaining
// budgets, in-flight requests, pinned sessions and totals).
type PoolStatus struct {
	Name string `json:"name"`
	// Instance is this relay instance's id among those sharing the pool
	// on Redis; empty without redis.
	Instance string `json:"instance,omitempty"`
	// Mode is where the pool's shared state lives now: local (no redis),
	// shared (on Redis) or local-fallback (Redis failed: this instance
	// serves from its share of each limit until Redis answers).
	Mode string `json:"mode"`
	// InstancesAlive counts the instances sharing the pool that sent a
	// heartbeat lately, this one included; absent without redis.
	InstancesAlive int `json:"instances_alive,omitempty"`
	keypool.Snapshot
	// Probes shows, for each disabled key, when the relay next re-checks
	// it with the upstream (POST …/enable puts it back at once).
	Probes map[string]keypool.ProbeStatus `json:"probes,omitempty"`
	// Clients are the pool's configured clients (by name, never token).
	Clients []keypool.ClientSnapshot `json:"clients"`
}

// EnableResult answers an enable request with the key's state afterwards.
type EnableResult struct {
	Pool string              `json:"pool"`
	Key  keypool.KeySnapshot `json:"key"`
}

func (a *AdminAPI) handlePools(w http.ResponseWriter, r *http.Request) error {
	// Segments are split on the escaped path so that a pool or key name
	// holding an escaped slash still addresses one segment.
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/cc_relay/pools")
	rest = strings.Trim(rest, "/")
	var seg []string
	if rest != "" {
		for _, s := range strings.Split(rest, "/") {
			u, err := url.PathUnescape(s)
			if err != nil {
				return adminError(http.StatusBadRequest, "bad path segment %q", s)
			}
			seg = append(seg, u)
		}
	}

	switch {
	case len(seg) == 0:
		if err := onlyMethod(w, r, http.MethodGet); err != nil {
			return err
		}
		out := []PoolStatus{}
		for _, name := range livePoolNames() {
			if e, ok := lookupEntry(name); ok {
				out = append(out, poolStatus(name, e))
			}
		}
		return writeAdminJSON(w, out)

	case len(seg) == 1:
		if err := onlyMethod(w, r, http.MethodGet); err != nil {
			return err
		}
		e, ok := lookupEntry(seg[0])
		if !ok {
			return adminError(http.StatusNotFound, "no pool named %q", seg[0])
		}
		return writeAdminJSON(w, poolStatus(seg[0], e))

	case len(seg) >= 2 && seg[1] == "clients":
		return a.handleClients(w, r, seg)

	case len(seg) == 4 && seg[1] == "keys" && seg[3] == "enable":
		if err := onlyMethod(w, r, http.MethodPost); err != nil {
			return err
		}
		e, ok := lookupEntry(seg[0])
		if !ok {
			return adminError(http.StatusNotFound, "no pool named %q", seg[0])
		}
		if !e.pool.Enable(seg[2]) {
			return adminError(http.StatusNotFound, "pool %q has no key named %q", seg[0], seg[2])
		}
		if a.logger != nil {
			a.logger.Info("key enabled through the admin API", zap.String("pool", seg[0]), zap.String("key", seg[2]))
		}
		st := poolStatus(seg[0], e)
		for _, k := range st.Keys {
			if k.Name == seg[2] {
				return writeAdminJSON(w, EnableResult{Pool: seg[0], Key: k})
			}
		}
		// A reload removed the key between Enable and the snapshot.
		return adminError(http.StatusNotFound, "pool %q has no key named %q", seg[0], seg[2])
	}
	return adminError(http.StatusNotFound, "not found")
}

// poolStatus snapshots a pool. Reasons hold no secret: an upstream's text is
// redacted before it becomes a reason.
func poolStatus(name string, e liveEntry) PoolStatus {
	// With redis, this instance's mirror is only as fresh as its last
	// request: read the pool-wide levels first (bounded by the store's
	// timeout, no round trip without redis).
	e.pool.RefreshShared(context.Background())
	sh := sharedOf(e)
	return PoolStatus{Name: name, Instance: sh.Instance, Mode: sh.Mode.String(), InstancesAlive: sh.InstancesAlive,
		Snapshot: e.pool.Snapshot(), Probes: e.pool.ProbeStatuses(), Clients: clientSnapshots(e.pool)}
}

func onlyMethod(w http.ResponseWriter, r *http.Request, method string) error {
	if r.Method == method {
		return nil
	}
	w.Header().Set("Allow", method)
	return adminError(http.StatusMethodNotAllowed, "method %s not allowed; use %s", r.Method, method)
}

func adminError(code int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: code, Err: fmt.Errorf(format, args...)}
}

func writeAdminJSON(w http.ResponseWriter, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return adminError(http.StatusInternalServerError, "encoding response: %v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	_, err = w.Write(append(b, '\n'))
	return err
}

// Interface guards.
var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)
