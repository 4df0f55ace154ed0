package caddymodule

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "cc-relay",
		Usage: "status|enable",
		Short: "Shows the relay's pools and enables keys, through the admin API",
		Long: `
Talks to a running Caddy's admin API (admin.api.cc_relay).

  caddy cc-relay status [--address <admin addr>] [--pool <name>]
      Prints each pool's keys with their state, budgets with bars, requests
      in flight, pinned sessions and totals. Colour when stdout is a
      terminal and NO_COLOR is unset; plain text when piped.
      Exit status: 0 when every pool shown has a key that can serve,
      2 when some pool has none (every key disabled, cooling or parked),
      1 when the admin API could not be asked.

  caddy cc-relay enable <pool> <key> [--address <admin addr>]
      Clears a key's disabled state, its organization's park and its
      cooldowns (POST /cc_relay/pools/<pool>/keys/<key>/enable).

The admin address is --address, else the one in --config, else Caddy's
default (localhost:2019), as for 'caddy stop' and 'caddy reload'.
`,
		CobraFunc: func(cmd *cobra.Command) {
			status := &cobra.Command{
				Use:   "status [--address <admin addr>] [--pool <name>]",
				Short: "Prints every pool's keys, states and budgets",
				Long: `
Prints each pool's keys with their state (ok, cooling until T with the
reason, parked, disabled with the reason), per model class a bar per
budget (requests, input and output tokens: used / limit, configured or
learned), requests in flight, pinned sessions and totals.

Exit status 0: every pool shown has a key that can serve. 2: some pool has
no such key (all disabled, cooling or parked). 1: the admin API could not
be asked.
`,
				Args: cobra.NoArgs,
				RunE: caddycmd.WrapCommandFuncForCobra(cmdStatus),
			}
			addAdminFlags(status)
			status.Flags().String("pool", "", "Show only this pool")
			cmd.AddCommand(status)

			enable := &cobra.Command{
				Use:   "enable <pool> <key> [--address <admin addr>]",
				Short: "Puts a disabled, cooling or parked key back into rotation",
				Args:  cobra.ExactArgs(2),
				RunE:  caddycmd.WrapCommandFuncForCobra(cmdEnable),
			}
			addAdminFlags(enable)
			cmd.AddCommand(enable)
		},
	})
}

func addAdminFlags(c *cobra.Command) {
	c.Flags().String("address", "", "The admin API's address (default: from --config, else "+caddy.DefaultAdminListen+")")
	c.Flags().StringP("config", "c", "", "Configuration file to read the admin address from")
	c.Flags().StringP("adapter", "a", "", "Name of the config adapter for --config")
}

// Exit statuses of 'caddy cc-relay status'.
const (
	exitServing   = 0
	exitNoAdmin   = 1 // caddy.ExitCodeFailedStartup
	exitCannotRun = 2
)

func adminAddress(fl caddycmd.Flags) (string, error) {
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), nil, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return "", fmt.Errorf("couldn't determine the admin API address: %v", err)
	}
	return addr, nil
}

func cmdStatus(fl caddycmd.Flags) (int, error) {
	addr, err := adminAddress(fl)
	if err != nil {
		return exitNoAdmin, err
	}
	return runStatus(os.Stdout, statusOptions{
		Address: addr,
		Pool:    fl.String("pool"),
		Color:   wantColor(os.Stdout),
		Now:     time.Now,
	})
}

func cmdEnable(fl caddycmd.Flags) (int, error) {
	addr, err := adminAddress(fl)
	if err != nil {
		return exitNoAdmin, err
	}
	return runEnable(os.Stdout, addr, fl.Arg(0), fl.Arg(1))
}

// statusOptions are the inputs of 'caddy cc-relay status'.
type statusOptions struct {
	Address string // the admin API's address
	Pool    string // "" for every pool
	Color   bool
	Now     func() time.Time
}

// runStatus asks the admin API for the pools and prints them to w. It
// returns exitCannotRun when a pool shown has no key that can serve.
func runStatus(w io.Writer, o statusOptions) (int, error) {
	pools, err := fetchPools(o.Address, o.Pool)
	if err != nil {
		return exitNoAdmin, err
	}
	if len(pools) == 0 {
		fmt.Fprintln(w, "no pool is running")
		return exitServing, nil
	}
	blocked := printStatus(w, pools, o.Now(), o.Color)
	if len(blocked) > 0 {
		return exitCannotRun, nil
	}
	return exitServing, nil
}

// fetchPools reads every pool, or the one named.
func fetchPools(addr, pool string) ([]PoolStatus, error) {
	uri := "/cc_relay/pools"
	if pool != "" {
		uri += "/" + url.PathEscape(pool)
	}
	res, err := caddycmd.AdminAPIRequest(addr, http.MethodGet, uri, nil, nil)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	dec := json.NewDecoder(io.LimitReader(res.Body, 64<<20))
	if pool != "" {
		var ps PoolStatus
		if err := dec.Decode(&ps); err != nil {
			return nil, fmt.Errorf("decoding pool %q from the admin API: %v", pool, err)
		}
		return []PoolStatus{ps}, nil
	}
	var all []PoolStatus
	if err := dec.Decode(&all); err != nil {
		return nil, fmt.Errorf("decoding pools from the admin API: %v", err)
	}
	return all, nil
}

// runEnable enables a key through the admin API and prints its state.
func runEnable(w io.Writer, addr, pool, key string) (int, error) {
	uri := "/cc_relay/pools/" + url.PathEscape(pool) + "/keys/" + url.PathEscape(key) + "/enable"
	res, err := caddycmd.AdminAPIRequest(addr, http.MethodPost, uri, nil, nil)
	if err != nil {
		return exitNoAdmin, err
	}
	defer res.Body.Close()
	var er EnableResult
	if err := json.NewDecoder(io.LimitReader(res.Body, 1<<20)).Decode(&er); err != nil {
		return exitNoAdmin, fmt.Errorf("decoding the admin API's answer: %v", err)
	}
	fmt.Fprintf(w, "pool %s: key %s enabled, now %s\n", er.Pool, er.Key.Name, er.Key.State)
	return exitServing, nil
}

// wantColor reports whether f is a terminal that should get colour: not
// when NO_COLOR is set (https://no-color.org) or TERM is dumb.
func wantColor(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	return term.IsTerminal(int(f.Fd()))
}
