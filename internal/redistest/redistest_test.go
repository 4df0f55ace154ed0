package redistest

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestStartPauseRestart(t *testing.T) {
	s := Start(t)
	if _, err := s.Do("SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "v" {
		t.Fatalf("GET k = %q, %v", v, err)
	}

	s.Pause()
	start := time.Now()
	if err := ping(s.Addr()); err == nil {
		t.Fatal("a paused server answered PING")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("ping of a paused server took %v", d)
	}
	s.Resume()
	if err := ping(s.Addr()); err != nil {
		t.Fatalf("resumed server: %v", err)
	}

	addr := s.Addr()
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restart moved from %s to %s", addr, s.Addr())
	}
	if v, err := s.Do("GET", "k"); err != nil || v != "" {
		t.Fatalf("after restart GET k = %q, %v; want empty", v, err)
	}

	s.Kill()
	if err := ping(addr); err == nil {
		t.Fatal("killed server answered PING")
	}
	s.Kill() // idempotent
}

// fatalTB records the message Start fails with.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatal(args ...any) {
	f.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

func TestMissingServerFailsWithHint(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CC_RELAY_NO_INSTALL", "1")
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); Start(f) }()
	<-done
	if f.msg != InstallHint {
		t.Fatalf("Start without redis-server failed with %q, want %q", f.msg, InstallHint)
	}
}
