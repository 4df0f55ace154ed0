package redisstate

import (
	"strconv"
	"strings"
)

// Key layout. Everything of one organization shares the hash tag
// {<prefix>:<pool>:<org>} so that one script can touch all its buckets on a
// Redis Cluster; pool-wide state shares {<prefix>:<pool>}. Session pins
// carry no tag: each is one key, spread over the cluster.
//
//	{p:pool:org}:o          hash  pu, pr: park until (ms), reason
//	{p:pool:org}:b:<class>  hash  l1..3 levels, t last refill (µs, Redis TIME),
//	                              c1..3 charged totals, m1..3 learned limits,
//	                              mt1..3 / s1..3 their observation times, cu, cr cooldown
//	{p:pool}:instances      zset  instance id → liveness deadline (ms)
//	{p:pool}:disabled       hash  key name → reason
//	{p:pool}:orgids         hash  key name → upstream organization id
//	p:pool:pin:<hex>        string key name, with the pin's TTL
//	{p:pool}:spend:<period>:<start>:<client>
//	                        hash  s picodollars spent, r resets: one client
//	                              (by name) in one budget period (start in
//	                              unix seconds), expiring after the period
type keys struct{ prefix, pool string }

var escaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// esc keeps names from closing or opening a hash tag.
func esc(s string) string { return escaper.Replace(s) }

func (k keys) orgTag(org string) string {
	return "{" + esc(k.prefix) + ":" + esc(k.pool) + ":" + esc(org) + "}"
}
func (k keys) org(org string) string { return k.orgTag(org) + ":o" }
func (k keys) budget(org, class string) string {
	return k.orgTag(org) + ":b:" + esc(class)
}
func (k keys) poolTag() string   { return "{" + esc(k.prefix) + ":" + esc(k.pool) + "}" }
func (k keys) instances() string { return k.poolTag() + ":instances" }
func (k keys) disabled() string  { return k.poolTag() + ":disabled" }
func (k keys) orgIDs() string    { return k.poolTag() + ":orgids" }
func (k keys) epoch() string     { return k.poolTag() + ":epoch" }
func (k keys) spend(client, period string, start int64) string {
	return k.poolTag() + ":spend:" + period + ":" + strconv.FormatInt(start, 10) + ":" + esc(client)
}
func (k keys) pin(h uint64) string {
	return esc(k.prefix) + ":" + esc(k.pool) + ":pin:" + strconv.FormatUint(h, 16)
}
