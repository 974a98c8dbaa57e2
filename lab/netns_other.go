//go:build !linux

package lab

import (
	"context"
	"errors"
	"net"
)

func dialInNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	return nil, errors.New("lab: network namespaces need Linux")
}
