package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"path"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/cc-relay/caddy-cc-relay/keypool"
)

// spendFlushDelay batches spend writes: the first unsaved change is written
// this long after it, with all the changes made meanwhile.
const spendFlushDelay = 10 * time.Second

// flush writes changed spend to storage now.
func (cs *clientSet) flush() {
	if cs.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cs.clients.Flush(ctx, cs.store); err != nil && cs.logger != nil {
		cs.logger.Error("saving client spend to storage", zap.Error(err))
	}
}

// scheduleFlush makes sure changed spend is written within
// spendFlushDelay, in one batch.
func (cs *clientSet) scheduleFlush() {
	if cs.store == nil {
		return
	}
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.timer != nil || cs.closed {
		// A configuration cleaned up leaves the saving to its successor,
		// which shares the state (or to its own final flush).
		return
	}
	cs.timer = time.AfterFunc(spendFlushDelay, func() {
		cs.mu.Lock()
		cs.timer = nil
		cs.mu.Unlock()
		cs.flush()
	})
}

// storageOf is the configuration's storage, nil when the context has no
// configuration (a handler provisioned outside a running Caddy, in tests).
func storageOf(ctx caddy.Context) (s spendStorage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	st := ctx.Storage()
	if st == nil {
		return nil
	}
	return st
}

// spendStorage is the part of certmagic.Storage the spend store uses.
type spendStorage interface {
	Load(ctx context.Context, key string) ([]byte, error)
	Store(ctx context.Context, key string, value []byte) error
}

// storageSpend keeps each client's spend under
// cc_relay/spend/<pool>/<client>.json in Caddy's storage.
type storageSpend struct {
	s    spendStorage
	pool string
}

func (s *storageSpend) key(client string) string {
	return path.Join("cc_relay", "spend", url.PathEscape(s.pool), url.PathEscape(client)+".json")
}

func (s *storageSpend) Load(ctx context.Context, client string) (keypool.SpendRecord, bool, error) {
	var rec keypool.SpendRecord
	b, err := s.s.Load(ctx, s.key(client))
	if errors.Is(err, fs.ErrNotExist) {
		return rec, false, nil
	}
	if err != nil {
		return rec, false, fmt.Errorf("client %q: %v", client, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, false, fmt.Errorf("client %q: stored spend: %v", client, err)
	}
	return rec, rec.Client == client, nil
}

func (s *storageSpend) Save(ctx context.Context, rec keypool.SpendRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.s.Store(ctx, s.key(rec.Client), b); err != nil {
		return fmt.Errorf("client %q: %v", rec.Client, err)
	}
	return nil
}
