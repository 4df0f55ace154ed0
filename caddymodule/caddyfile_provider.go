package caddymodule

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// parseBedrock reads a bedrock block:
//
//	bedrock <name> {
//	    region            <aws region>
//	    access_key_id     <id>
//	    secret_access_key <secret>
//	    session_token     <token>
//	    endpoint          <url>
//	    model <client model glob> <bedrock model id or inference profile>
//	    rpm <n>  itpm <n>  otpm <n>  weight <n>  priority <n>  org <label>
//	}
func parseBedrock(d *caddyfile.Dispenser) (BedrockKey, error) {
	var b BedrockKey
	if !d.NextArg() {
		return b, d.ArgErr()
	}
	b.Name = d.Val()
	if d.NextArg() {
		return b, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		switch sub {
		case "region", "access_key_id", "secret_access_key", "session_token", "endpoint":
			v, err := oneArg(d)
			if err != nil {
				return b, err
			}
			switch sub {
			case "region":
				b.Region = v
			case "access_key_id":
				b.AccessKeyID = v
			case "secret_access_key":
				b.SecretAccessKey = v
			case "session_token":
				b.SessionToken = v
			case "endpoint":
				b.Endpoint = v
			}
		case "model":
			m, err := modelArg(d)
			if err != nil {
				return b, err
			}
			b.Models = append(b.Models, m)
		default:
			ok, err := poolArg(d, sub, &b.RPM, &b.ITPM, &b.OTPM, &b.Weight, &b.Priority, &b.Org)
			if err != nil {
				return b, err
			}
			if !ok {
				return b, d.Errf("unknown bedrock subdirective %q", d.Val())
			}
		}
	}
	return b, nil // required fields: validateProviders
}

// parseVertex reads a vertex block:
//
//	vertex <name> {
//	    project     <gcp project>
//	    region      <region>
//	    credentials <service account JSON file>
//	    endpoint    <url>
//	    model <client model glob> <vertex model id>
//	    rpm <n>  itpm <n>  otpm <n>  weight <n>  priority <n>  org <label>
//	}
func parseVertex(d *caddyfile.Dispenser) (VertexKey, error) {
	var v VertexKey
	if !d.NextArg() {
		return v, d.ArgErr()
	}
	v.Name = d.Val()
	if d.NextArg() {
		return v, d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		switch sub {
		case "project", "region", "credentials", "endpoint":
			a, err := oneArg(d)
			if err != nil {
				return v, err
			}
			switch sub {
			case "project":
				v.Project = a
			case "region":
				v.Region = a
			case "credentials":
				v.Credentials = a
			case "endpoint":
				v.Endpoint = a
			}
		case "model":
			m, err := modelArg(d)
			if err != nil {
				return v, err
			}
			v.Models = append(v.Models, m)
		default:
			ok, err := poolArg(d, sub, &v.RPM, &v.ITPM, &v.OTPM, &v.Weight, &v.Priority, &v.Org)
			if err != nil {
				return v, err
			}
			if !ok {
				return v, d.Errf("unknown vertex subdirective %q", d.Val())
			}
		}
	}
	return v, nil // required fields: validateProviders
}

func oneArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

func modelArg(d *caddyfile.Dispenser) (ModelRoute, error) {
	var m ModelRoute
	if !d.Args(&m.Pattern, &m.ID) {
		return m, d.ArgErr()
	}
	if d.NextArg() {
		return m, d.ArgErr()
	}
	return m, nil
}

// poolArg reads the lines a provider key shares with key: limits, weight,
// priority and org. It reports whether sub was one of them. Several may
// share a line, as in "rpm 50  itpm 40000  priority 1".
func poolArg(d *caddyfile.Dispenser, sub string, rpm, itpm, otpm *int64, weight, priority *int, org *string) (bool, error) {
	for {
		ok, err := poolPair(d, sub, rpm, itpm, otpm, weight, priority, org)
		if !ok || err != nil {
			return ok, err
		}
		if !d.NextArg() {
			return true, nil
		}
		sub = d.Val()
	}
}

func poolPair(d *caddyfile.Dispenser, sub string, rpm, itpm, otpm *int64, weight, priority *int, org *string) (bool, error) {
	switch sub {
	case "org":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		*org = d.Val()
		return true, nil
	case "rpm", "itpm", "otpm", "weight", "priority":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		n, err := strconv.ParseInt(d.Val(), 10, 64)
		if err != nil || n < 0 || n > 1<<40 {
			return true, d.Errf("%s: want a whole number from 0 to 2^40, got %q", sub, d.Val())
		}
		switch sub {
		case "rpm":
			*rpm = n
		case "itpm":
			*itpm = n
		case "otpm":
			*otpm = n
		case "weight":
			if n == 0 {
				return true, d.Errf("weight must be at least 1")
			}
			*weight = int(n)
		case "priority":
			*priority = int(n)
		}
		return true, nil
	}
	return false, nil
}
