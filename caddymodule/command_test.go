package caddymodule

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// TestCommandStatusAndEnable runs 'caddy cc-relay status' and 'enable'
// against a running relay with two pools: one that can serve (a key ok,
// one disabled) and one whose only key cools after an upstream 429. The
// output names every key with its state; the exit status is 2 while a
// pool has no key that can serve, 0 once enable put it back.
func TestCommandStatusAndEnable(t *testing.T) {
	fake := useFakeClock(t)
	secrets := map[string]string{
		"CC_RELAY_CMD_ALPHA": "sk-ant-api03-cmdAx7Lq2Vz9Rk4Ws",
		"CC_RELAY_CMD_BETA":  "sk-ant-api03-cmdBn3Hy8Tp1Jd6Gm",
		"CC_RELAY_CMD_SOLO":  "sk-ant-api03-cmdSf5Wc2Xe7Nb9Uq",
		"CC_RELAY_CMD_TOKEN": "ct-cmdTk6Pm1Zr4Yh8Va",
	}
	setEnvs(t, secrets)
	up := newUpstream(t, func(key string, w http.ResponseWriter, r *http.Request) {
		switch key {
		case secrets["CC_RELAY_CMD_BETA"]:
			upstreamError(w, http.StatusForbidden, "permission_error", "key "+key+" may not do this")
		case secrets["CC_RELAY_CMD_SOLO"]:
			upstreamRateLimited(w, "30")
		default:
			okMessage(w)
		}
	})
	startRelay(t, fmt.Sprintf(`http://localhost:9080 {
	handle /blocked/* {
		uri strip_prefix /blocked
		cc_relay cmd_blocked {
			client_token {env.CC_RELAY_CMD_TOKEN}
			key {env.CC_RELAY_CMD_SOLO} {
				name solo
			}
		}
		reverse_proxy %[1]s
	}
	handle {
		cc_relay cmd_ok {
			strategy priority
			client_token {env.CC_RELAY_CMD_TOKEN} dev {
				rpm 50
				max_concurrent 4
				budget 10 day
			}
			key {env.CC_RELAY_CMD_BETA} {
				name beta
			}
			key {env.CC_RELAY_CMD_ALPHA} {
				name alpha
				rpm 20
				itpm 1000
				priority 1
			}
		}
		reverse_proxy %[1]s
	}
}
`, up.addr()))
	if res, body := post(t, secrets["CC_RELAY_CMD_TOKEN"], msgBody); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	req := newRequest(t, http.MethodPost, relayAddr+"/blocked/v1/messages", strings.NewReader(msgBody))
	setRelayHeaders(req.Header, secrets["CC_RELAY_CMD_TOKEN"])
	if res, body := roundTrip(t, relayHTTP, req); res.StatusCode != 429 {
		t.Fatalf("blocked pool answered %d %s", res.StatusCode, body)
	}
	waitIdle(t, "cmd_ok")
	waitIdle(t, "cmd_blocked")

	const admin = "localhost:2999"
	var outputs []string
	status := func(pool string, color bool, wantCode int) string {
		t.Helper()
		var out bytes.Buffer
		code, err := runStatus(&out, statusOptions{Address: admin, Pool: pool, Color: color, Now: fake.Now})
		if err != nil || code != wantCode {
			t.Fatalf("status --pool %q: exit %d, %v, want %d:\n%s", pool, code, err, wantCode, out.String())
		}
		outputs = append(outputs, out.String())
		return out.String()
	}

	// One pool that can serve: exit 0, plain text (no terminal).
	out := status("cmd_ok", false, exitServing)
	for _, want := range []string{
		"pool cmd_ok — 1 of 2 keys ready · strategy priority",
		"beta   beta   disabled", "alpha  alpha  ok",
		"reasons", "upstream 403", "[redacted]",
		"budgets per minute, used / limit", "org alpha (alpha)", "org beta (beta)",
		"sonnet            no limit known yet", "sonnet  requests  [#-------------------]     1 / 20  configured",
		"input     [--------------------]  12 / 1000  configured", "output    [                    ]          –  no limit known\n",
		"total",
		"clients: spend this period", "dev           0/4       1  rpm 1 / 50", "$0.00 / $10.00 day  2026-06-02 00:00 UTC",
	} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Fatalf("plain output has colour codes:\n%q", out)
	}

	// Every pool: cmd_blocked's only key is cooling, so the exit status
	// says no key can serve.
	out = status("", false, exitCannotRun)
	for _, want := range []string{"pool cmd_blocked — no key can serve", "solo   solo  cooling  12:00:30 UTC (in 30s)", "sonnet: upstream 429",
		"pool cmd_ok", "no key can serve in pool cmd_blocked"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}

	// Colour, when asked for: states and bars, columns still aligned.
	out = status("cmd_blocked", true, exitCannotRun)
	if !strings.Contains(out, ansiYellow+"cooling"+ansiReset) || !strings.Contains(out, ansiBold+ansiRed+"no key can serve"+ansiReset) {
		t.Fatalf("coloured status:\n%q", out)
	}
	out = status("cmd_ok", true, exitServing)
	if !strings.Contains(out, ansiGreen+"ok"+ansiReset+"     ") || !strings.Contains(out, ansiRed+"disabled"+ansiReset) {
		t.Fatalf("coloured status:\n%q", out)
	}

	// enable puts the cooling key back: the pool can serve again.
	var eo bytes.Buffer
	if code, err := runEnable(&eo, admin, "cmd_blocked", "solo"); err != nil || code != 0 || eo.String() != "pool cmd_blocked: key solo enabled, now ok\n" {
		t.Fatalf("enable: %d %v %q", code, err, eo.String())
	}
	status("", false, exitServing)

	// Unknown names: an error, exit 1, and the error names no secret.
	if code, err := runEnable(io.Discard, admin, "cmd_ok", "nope"); err == nil || code != exitNoAdmin || !strings.Contains(err.Error(), "404") {
		t.Fatalf("enable of an unknown key: %d %v", code, err)
	}
	if code, err := runStatus(io.Discard, statusOptions{Address: admin, Pool: "cmd_nope", Now: fake.Now}); err == nil || code != exitNoAdmin || !strings.Contains(err.Error(), `no pool named \"cmd_nope\"`) {
		t.Fatalf("status of an unknown pool: %d %v", code, err)
	}
	if code, err := runStatus(io.Discard, statusOptions{Address: "127.0.0.1:1", Now: fake.Now}); err == nil || code != exitNoAdmin {
		t.Fatalf("status without an admin API: %d %v", code, err)
	}
	for _, o := range outputs {
		assertNoSecret(t, "status output", o, secrets)
	}

	// The registered command: subcommands, flags, arguments and the exit
	// status carried to caddy's main.
	run := func(args ...string) (string, error) {
		t.Helper()
		cmd := registeredCommand(t)
		cmd.SetArgs(args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		var err error
		stdout := captureStdout(t, func() { err = cmd.Execute() })
		return stdout, err
	}
	if out, err := run("status", "--address", admin, "--pool", "cmd_ok"); err != nil || !strings.Contains(out, "alpha  alpha  ok") {
		t.Fatalf("caddy cc-relay status: %v\n%s", err, out)
	}
	if _, err := run("enable", "cmd_blocked", "solo", "--address", admin); err != nil {
		t.Fatalf("caddy cc-relay enable: %v", err)
	}
	if _, err := run("enable", "cmd_blocked"); err == nil || !strings.Contains(err.Error(), "accepts 2 arg(s)") {
		t.Fatalf("enable with one argument: %v", err)
	}
	req = newRequest(t, http.MethodPost, relayAddr+"/blocked/v1/messages", strings.NewReader(msgBody))
	setRelayHeaders(req.Header, secrets["CC_RELAY_CMD_TOKEN"])
	roundTrip(t, relayHTTP, req) // cools solo again
	waitIdle(t, "cmd_blocked")
	if _, err := run("status", "--address", admin, "--pool", "cmd_blocked"); err == nil || !strings.Contains(err.Error(), "status 2") {
		t.Fatalf("status of a blocked pool: %v", err)
	}
}

// registeredCommand builds 'caddy cc-relay' as caddy's main does, from the
// registered command.
func registeredCommand(t *testing.T) *cobra.Command {
	t.Helper()
	c, ok := caddycmd.Commands()["cc-relay"]
	if !ok || c.CobraFunc == nil {
		t.Fatal("cc-relay is not a registered caddy command")
	}
	cmd := &cobra.Command{Use: c.Name, Short: c.Short, Long: c.Long, SilenceUsage: true}
	c.CobraFunc(cmd)
	for _, want := range []string{"status", "enable"} {
		sub, _, err := cmd.Find([]string{want})
		if err != nil || sub.Name() != want || sub.Flags().Lookup("address") == nil {
			t.Fatalf("cc-relay %s is missing or lacks --address: %v", want, err)
		}
	}
	return cmd
}

// captureStdout runs f with os.Stdout going to a pipe and returns what it
// wrote.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	f()
	os.Stdout = old
	w.Close()
	out := <-done
	r.Close()
	return out
}

func TestCommandColorChoice(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if wantColor(f) {
		t.Fatal("colour for a file")
	}
	t.Setenv("NO_COLOR", "1")
	if wantColor(os.Stdout) {
		t.Fatal("colour despite NO_COLOR")
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 9999: "9999", 12345: "12.3k", 40000: "40k", 1_500_000: "1.5M", 2_000_000_000: "2G", -3: "-3"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}
