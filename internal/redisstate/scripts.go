package redisstate

import (
	_ "embed"

	"github.com/redis/rueidis"
)

// The scripts run with EVALSHA and fall back to EVAL when the server does
// not know them (a restart empties its script cache): rueidis.Lua does both.
var (
	// preludeSrc holds the local functions of the budget arithmetic
	// (Redis's clock, capacity, refill, expiry); the budget script is the
	// prelude followed by flush.lua, one self-contained script.
	//go:embed lua/prelude.lua
	preludeSrc string
	//go:embed lua/flush.lua
	flushSrc string
	//go:embed lua/until.lua
	untilSrc string
	//go:embed lua/heartbeat.lua
	heartbeatSrc string
	//go:embed lua/spend.lua
	spendSrc string
	// enableSrc runs with a plain EVAL, pipelined with the HDEL of the
	// disabled key: it is rare and short.
	//go:embed lua/enable.lua
	enableSrc string

	flushScript     = rueidis.NewLuaScript(preludeSrc + flushSrc)
	untilScript     = rueidis.NewLuaScript(untilSrc)
	heartbeatScript = rueidis.NewLuaScript(heartbeatSrc)
	spendScript     = rueidis.NewLuaScript(spendSrc)
)
