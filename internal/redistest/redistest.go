// Package redistest runs a real redis-server for tests: on a free
// 127.0.0.1 port, without persistence, in a temporary directory. A test can
// kill it, stall it (SIGSTOP) and restart it empty on the same port, which is
// what the shared-state engine must survive.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the one line a test fails with when redis-server is missing.
const InstallHint = "redis-server not found: apt-get install redis-server"

// startTimeout bounds how long Start and Restart wait for PING to answer.
const startTimeout = 10 * time.Second

// Server is one redis-server process owned by a test (or a benchmark).
type Server struct {
	helper func()                           // testing.TB's Helper, or nothing
	fatalf func(format string, args ...any) // testing.TB's Fatalf, or Launch's
	bin    string
	dir    string
	port   int

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
}

// Start runs a fresh redis-server and stops it when the test ends. The test
// fails (never skips) when redis-server is not installed.
func Start(tb testing.TB) *Server {
	tb.Helper()
	s, err := launchNew(tb.TempDir(), tb.Helper, tb.Fatalf)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Kill)
	return s
}

// Launch runs a fresh redis-server in dir for a program that is not a test
// (bench/cluster). fatalf is called where a test would fail: a signal or a
// restart that did not work. The caller stops the server with Kill.
func Launch(dir string, fatalf func(format string, args ...any)) (*Server, error) {
	return launchNew(dir, func() {}, fatalf)
}

func launchNew(dir string, helper func(), fatalf func(format string, args ...any)) (*Server, error) {
	bin, err := lookPath()
	if err != nil {
		return nil, errors.New(InstallHint)
	}
	s := &Server{helper: helper, fatalf: fatalf, bin: bin, dir: dir}
	// A port the kernel just handed out and released is free with high
	// probability; a collision makes redis-server exit, and we retry.
	var lastErr error
	for range 5 {
		s.port, err = freePort()
		if err != nil {
			return nil, fmt.Errorf("redistest: free port: %v", err)
		}
		if lastErr = s.launch(); lastErr == nil {
			return s, nil
		}
	}
	return nil, fmt.Errorf("redistest: redis-server did not start: %v", lastErr)
}

// Addr is host:port of the server.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// URL is the server's redis:// URL.
func (s *Server) URL() string { return "redis://" + s.Addr() }

// lookPath finds redis-server. On a fresh Debian machine where the tests
// run as root it installs the package first (once, under a lock shared by
// the test binaries of all packages), so the README's test command needs no
// manual step; anyone else gets InstallHint.
func lookPath() (string, error) {
	if bin, err := exec.LookPath("redis-server"); err == nil {
		return bin, nil
	}
	apt, err := exec.LookPath("apt-get")
	if err != nil || os.Geteuid() != 0 || os.Getenv("CC_RELAY_NO_INSTALL") != "" {
		return "", errors.New(InstallHint)
	}
	installOnce.Do(func() {
		lock, err := os.OpenFile(filepath.Join(os.TempDir(), "cc-relay-redis-install.lock"), os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return
		}
		defer lock.Close()
		if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX) != nil {
			return
		}
		defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
		if _, err := exec.LookPath("redis-server"); err == nil {
			return // another package's tests installed it meanwhile
		}
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		for _, args := range [][]string{{"update", "-qq"}, {"install", "-y", "-qq", "redis-server"}} {
			cmd := exec.Command(apt, args...)
			cmd.Env = env
			if cmd.Run() != nil {
				return
			}
		}
	})
	return exec.LookPath("redis-server")
}

var installOnce sync.Once

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (s *Server) launch() error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done, s.paused = cmd, done, false
	s.mu.Unlock()
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
			return fmt.Errorf("exited: %s", lastLine(string(log)))
		default:
		}
		if err := ping(s.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("no PONG within %v: %v", startTimeout, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return errors.New("unexpected reply " + strings.TrimSpace(line))
	}
	return nil
}

// Kill stops the server at once (SIGKILL), as a crash would. It is safe to
// call on a stopped server.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	// SIGKILL also ends a stopped process; wait so the port is free.
	<-done
}

// Pause stalls the server (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() { s.signal(syscall.SIGSTOP, true) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() { s.signal(syscall.SIGCONT, false) }

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		s.fatalf("redistest: %v to a server that is not running", sig)
		return // Launch's fatalf returns
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.fatalf("redistest: %v: %v", sig, err)
		return
	}
	s.paused = paused
}

// Restart kills the server and starts an empty one on the same port.
func (s *Server) Restart() {
	s.helper()
	s.Kill()
	var err error
	// The port was ours a moment ago; give the kernel a few tries.
	for range 20 {
		if err = s.launch(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.fatalf("redistest: restart on port %d: %v", s.port, err)
}

// Do sends one command over a fresh connection and returns the raw first
// reply line, for tests that inspect the server directly.
func (s *Server) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") {
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if strings.HasPrefix(line, "-") {
		return "", errors.New(line[1:])
	}
	return strings.TrimLeft(line, "+:"), nil
}
