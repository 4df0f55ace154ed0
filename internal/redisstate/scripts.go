package redisstate

import (
	_ "embed"

	"github.com/redis/rueidis"
)

// The scripts run with EVALSHA and fall back to EVAL when the server does
// not know them (a restart empties its script cache): rueidis.Lua does both.
var (
	//go:embed lua/reserve.lua
	reserveSrc string
	//go:embed lua/settle.lua
	settleSrc string
	//go:embed lua/sync.lua
	syncSrc string
	//go:embed lua/until.lua
	untilSrc string
	//go:embed lua/heartbeat.lua
	heartbeatSrc string
	// enableSrc runs with a plain EVAL, pipelined with the HDEL of the
	// disabled key: it is rare and short.
	//go:embed lua/enable.lua
	enableSrc string

	reserveScript   = rueidis.NewLuaScript(reserveSrc)
	settleScript    = rueidis.NewLuaScript(settleSrc)
	syncScript      = rueidis.NewLuaScript(syncSrc)
	untilScript     = rueidis.NewLuaScript(untilSrc)
	heartbeatScript = rueidis.NewLuaScript(heartbeatSrc)
)
