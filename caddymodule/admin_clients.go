package caddymodule

import (
	"net/http"

	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// ClientsStatus answers GET /cc_relay/pools/<pool>/clients: every
// configured client's limits, what is left of them, requests in flight,
// spend this period, budget left and when the period resets.
type ClientsStatus struct {
	Pool    string                   `json:"pool"`
	Clients []keypool.ClientSnapshot `json:"clients"`
}

// ClientResetResult answers a reset with the client's state afterwards.
type ClientResetResult struct {
	Pool   string                 `json:"pool"`
	Client keypool.ClientSnapshot `json:"client"`
}

// clientSnapshots returns the clients of a live pool; empty, not nil, so
// the JSON always has the array.
func clientSnapshots(p *keypool.Pool) []keypool.ClientSnapshot {
	v, _ := clientOf.Load(p)
	if cs, ok := v.(*clientSet); ok {
		return cs.clients.Snapshot()
	}
	return []keypool.ClientSnapshot{}
}

// handleClients serves /cc_relay/pools/<pool>/clients[/<name>/reset];
// seg is the path's segments, seg[1] == "clients".
func (a *AdminAPI) handleClients(w http.ResponseWriter, r *http.Request, seg []string) error {
	pool := seg[0]
	switch {
	case len(seg) == 2:
		if err := onlyMethod(w, r, http.MethodGet); err != nil {
			return err
		}
		p := lookupPool(pool)
		if p == nil {
			return adminError(http.StatusNotFound, "no pool named %q", pool)
		}
		return writeAdminJSON(w, ClientsStatus{Pool: pool, Clients: clientSnapshots(p)})
	case len(seg) == 4 && seg[3] == "reset":
		if err := onlyMethod(w, r, http.MethodPost); err != nil {
			return err
		}
		cs := lookupClients(pool)
		if cs == nil {
			return adminError(http.StatusNotFound, "no pool named %q", pool)
		}
		name := seg[2]
		if !cs.clients.Reset(name) {
			return adminError(http.StatusNotFound, "pool %q has no client named %q", pool, name)
		}
		cs.flush()
		if a.logger != nil {
			a.logger.Info("client spend reset through the admin API", zap.String("pool", pool), zap.String("client", name))
		}
		for _, c := range cs.clients.Snapshot() {
			if c.Name == name {
				return writeAdminJSON(w, ClientResetResult{Pool: pool, Client: c})
			}
		}
	}
	return adminError(http.StatusNotFound, "not found")
}
