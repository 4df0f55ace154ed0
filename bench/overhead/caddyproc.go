package main

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

	"github.com/cc-relay/caddy-cc-relay/internal/relaytest"
)

const clientToken = "bench-client-token-7f3c9a"

// siteConfig describes the two sites of one Caddy process.
type siteConfig struct {
	upstream string // host:port
	portA    int
	portA2   int // a second bare reverse_proxy site: the noise floor
	portB    int
	admin    string // host:port
	keys     int
	strategy string
	// relayExtra is merged into the cc_relay handler (soak settings).
	relayExtra map[string]any
	// keySpecs, when set, are the keys' JSON as is (soak).
	keySpecs []map[string]any
	// env is added to the subprocess's environment.
	env []string
}

func freePort() (int, error) { return relaytest.FreePort() }

func benchKeySecret(i int) string {
	return fmt.Sprintf("sk-ant-api03-bench-%04d-%s", i, strings.Repeat("x", 64))
}

func (c siteConfig) json() []byte {
	proxy := func() map[string]any {
		return map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": c.upstream}}}
	}
	keys := c.keySpecs
	if keys == nil {
		for i := 0; i < c.keys; i++ {
			keys = append(keys, map[string]any{
				"key": benchKeySecret(i), "name": fmt.Sprintf("bench-%02d", i),
				"rpm": benchRPM, "itpm": benchITPM, "otpm": benchOTPM,
			})
		}
	}
	relay := map[string]any{
		"handler":       "cc_relay",
		"pool":          "bench",
		"strategy":      c.strategy,
		"client_tokens": []any{map[string]any{"token": clientToken, "name": "bench"}},
		"keys":          keys,
	}
	for k, v := range c.relayExtra {
		relay[k] = v
	}
	server := func(port int, handlers ...any) map[string]any {
		return map[string]any{
			"listen":          []string{"127.0.0.1:" + strconv.Itoa(port)},
			"routes":          []any{map[string]any{"handle": handlers}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	servers := map[string]any{"b": server(c.portB, relay, proxy())}
	if c.portA != 0 {
		servers["a"] = server(c.portA, proxy())
	}
	if c.portA2 != 0 {
		servers["a2"] = server(c.portA2, proxy())
	}
	cfg := map[string]any{
		"admin":   map[string]any{"listen": c.admin, "config": map[string]any{"persist": false}},
		"logging": map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}},
		"apps":    map[string]any{"http": map[string]any{"servers": servers}},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return b
}

// caddyProc is one running Caddy subprocess.
type caddyProc struct {
	cmd   *exec.Cmd
	pid   int
	admin string
	log   *os.File
	done  chan struct{}
	cfg   siteConfig
}

func startCaddy(bin, workDir, name string, cfg siteConfig) (*caddyProc, error) {
	cfgPath := filepath.Join(workDir, name+".json")
	if err := os.WriteFile(cfgPath, cfg.json(), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(workDir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(),
		"XDG_CONFIG_HOME="+filepath.Join(workDir, "xdg-config"),
		"XDG_DATA_HOME="+filepath.Join(workDir, "xdg-data"))
	cmd.Env = append(cmd.Env, cfg.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &caddyProc{cmd: cmd, pid: cmd.Process.Pid, admin: cfg.admin, log: logf, done: make(chan struct{}), cfg: cfg}
	go func() { _ = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(30 * time.Second)
	ports := []int{cfg.portB}
	for _, p := range []int{cfg.portA, cfg.portA2} {
		if p != 0 {
			ports = append(ports, p)
		}
	}
	for _, port := range ports {
		for {
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				return nil, fmt.Errorf("caddy exited at startup; see %s", logf.Name())
			default:
			}
			if time.Now().After(deadline) {
				p.stop()
				return nil, fmt.Errorf("caddy did not listen on %d within 30s; see %s", port, logf.Name())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p, nil
}

func (p *caddyProc) stop() {
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

func (p *caddyProc) get(path string) ([]byte, error) {
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

// memStats is the part of runtime.MemStats read from /debug/vars.
type memStats struct {
	Mallocs, Frees, TotalAlloc, HeapAlloc, HeapInuse, StackInuse, Sys, NumGC uint64
}

func (p *caddyProc) memstats() (memStats, error) {
	b, err := p.get("/debug/vars")
	if err != nil {
		return memStats{}, err
	}
	var v struct{ Memstats memStats }
	err = json.Unmarshal(b, &v)
	return v.Memstats, err
}

// gc forces a collection in the Caddy process (the heap profile handler
// runs one with gc=1).
// gc collects twice: sync.Pools (Caddy's buffers, the module's request
// bodies) keep their items through one collection as a victim cache, and
// what an idle pool holds is not memory a stream keeps.
func (p *caddyProc) gc() error {
	if _, err := p.get("/debug/pprof/heap?gc=1"); err != nil {
		return err
	}
	_, err := p.get("/debug/pprof/heap?gc=1")
	return err
}

func (p *caddyProc) goroutines() (int, string, error) {
	b, err := p.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, "", err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	n, err := strconv.Atoi(strings.TrimPrefix(string(line), "goroutine profile: total "))
	return n, string(b), err
}

// rssKB reads VmRSS from /proc/<pid>/status.
func (p *caddyProc) rssKB() (int64, error) {
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

// cpuNS is the CPU time the process's threads have run, in ns, from
// /proc/<pid>/task/*/schedstat (nanosecond resolution), falling back to
// utime+stime from /proc/<pid>/stat.
func (p *caddyProc) cpuNS() int64 {
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
