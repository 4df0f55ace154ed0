// Package caddyproc runs Caddy as a subprocess for the benchmarks in bench/:
// a configuration written to a file, the process started with its log in
// the work directory, and the admin API and /proc read for what it used.
// The benchmarks that compare sites start one; bench/cluster starts several
// relays and a load balancer.
package caddyproc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one running Caddy subprocess.
type Proc struct {
	cmd   *exec.Cmd
	pid   int
	admin string
	log   *os.File
	done  chan struct{}
}

// startWait bounds how long Start waits for every port to accept.
const startWait = 30 * time.Second

// Start writes config to <workDir>/<name>.json and runs
// `argv... run --config <that file>` (argv is a Caddy binary, or a binary
// and the arguments that make it act as one), logging to <name>.log. It
// returns once every port in ports accepts connections on 127.0.0.1, or an
// error naming the log when Caddy exits or does not listen within 30 s.
// admin is the host:port the configuration gives the admin API. env is
// added to the subprocess's environment, which also gets XDG directories
// under workDir so that no run touches the user's Caddy storage. The
// subprocess dies with the benchmark (Pdeathsig).
func Start(argv []string, workDir, name string, config []byte, admin string, ports []int, env []string) (*Proc, error) {
	cfgPath := filepath.Join(workDir, name+".json")
	if err := os.WriteFile(cfgPath, config, 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		return nil, err
	}
	args := append(append([]string(nil), argv[1:]...), "run", "--config", cfgPath)
	cmd := exec.Command(argv[0], args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(workDir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(workDir, "xdg-data"))
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &Proc{cmd: cmd, pid: cmd.Process.Pid, admin: admin, log: logf, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(startWait)
	for _, port := range ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				return nil, fmt.Errorf("caddy exited at startup: %s (see %s)", p.LastLogLine(), logf.Name())
			default:
			}
			if time.Now().After(deadline) {
				p.Stop()
				return nil, fmt.Errorf("caddy did not listen on %d within %s; see %s", port, startWait, logf.Name())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p, nil
}

// PID is the subprocess's process id.
func (p *Proc) PID() int { return p.pid }

// Admin is the host:port of its admin API.
func (p *Proc) Admin() string { return p.admin }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// LastLogLine is the last line Caddy logged, for an error message.
func (p *Proc) LastLogLine() string {
	b, _ := os.ReadFile(p.log.Name())
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// Stop asks Caddy to stop through the admin API and kills it if it has not
// exited 10 s later. It is safe on a nil Proc.
func (p *Proc) Stop() {
	if p == nil {
		return
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.admin+"/stop", nil)
	if resp, err := adminClient.Do(req); err == nil {
		resp.Body.Close()
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	p.log.Close()
}

var adminClient = &http.Client{Timeout: 120 * time.Second}

// Get reads path from the admin API; a status other than 200 is an error.
func (p *Proc) Get(path string) ([]byte, error) {
	resp, err := adminClient.Get("http://" + p.admin + path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return b, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return b, err
}

// MemStats is the part of runtime.MemStats read from /debug/vars.
type MemStats struct {
	Mallocs, Frees, TotalAlloc, HeapAlloc, HeapInuse, StackInuse, Sys, NumGC uint64
}

func (p *Proc) MemStats() (MemStats, error) {
	b, err := p.Get("/debug/vars")
	if err != nil {
		return MemStats{}, err
	}
	var v struct{ Memstats MemStats }
	err = json.Unmarshal(b, &v)
	return v.Memstats, err
}

// GC forces a collection in the Caddy process (the heap profile handler
// runs one with gc=1), twice: sync.Pools (Caddy's buffers, the module's request
// bodies) keep their items through one collection as a victim cache, and
// what an idle pool holds is not memory a stream keeps.
func (p *Proc) GC() error {
	if _, err := p.Get("/debug/pprof/heap?gc=1"); err != nil {
		return err
	}
	_, err := p.Get("/debug/pprof/heap?gc=1")
	return err
}

// Goroutines is the goroutine count and the debug=1 dump.
func (p *Proc) Goroutines() (int, string, error) {
	b, err := p.Get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, "", err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	n, err := strconv.Atoi(strings.TrimPrefix(string(line), "goroutine profile: total "))
	return n, string(b), err
}

// RSSKB reads VmRSS from /proc/<pid>/status.
func (p *Proc) RSSKB() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}

// CPUNS is the CPU time the process's threads have run, in ns, from
// /proc/<pid>/task/*/schedstat (nanosecond resolution), falling back to
// utime+stime from /proc/<pid>/stat.
func (p *Proc) CPUNS() int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", p.pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			sum += n
		}
	}
	if sum > 0 {
		return sum
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return (ut + st) * 10_000_000 // USER_HZ = 100
}
