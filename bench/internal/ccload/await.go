package ccload

import (
	"fmt"
	"os"
	"time"
)

// Await waits for done, printing progress to stderr every 10 s. Requests
// still running 30 s after end are cancelled (cancel), then it waits for
// done: every run ends within a bounded time of its end.
func Await(run string, done <-chan struct{}, t0, end time.Time, cancel func()) {
	progress := time.NewTicker(10 * time.Second)
	defer progress.Stop()
	cut := time.NewTimer(time.Until(end.Add(30 * time.Second)))
	defer cut.Stop()
	for {
		select {
		case <-done:
			return
		case <-progress.C:
			fmt.Fprintf(os.Stderr, "  %s: %s elapsed\n", run, time.Since(t0).Round(time.Second))
		case <-cut.C:
			fmt.Fprintf(os.Stderr, "  %s: cancelling requests still running 30s after the end\n", run)
			cancel()
			<-done
			return
		}
	}
}
