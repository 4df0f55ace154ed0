package relaytest

import (
	"errors"
	"net"
	"strconv"
)

// reservedPorts are the fixed ports caddytest binds (admin, HTTP, HTTPS):
// a port handed out here must never be one of them, or a test or benchmark
// would collide with a caddytest run in another package.
var reservedPorts = map[int]bool{2999: true, 9080: true, 9443: true}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago and
// is not one of caddytest's fixed ports.
func FreePort() (int, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !reservedPorts[p] {
			return p, nil
		}
	}
	return 0, errors.New("relaytest: no free port outside caddytest's fixed ports")
}

// FreeAddr is FreePort as a "127.0.0.1:port" address.
func FreeAddr() (string, error) {
	p, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}
