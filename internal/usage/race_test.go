//go:build race

package usage

// raceEnabled reports whether the race detector is on. Under it, sync.Pool
// drops a random quarter of what is put in it, so allocation counts that
// rely on a pool do not hold.
const raceEnabled = true
