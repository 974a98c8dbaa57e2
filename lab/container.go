package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Container gives host (a role) a container as Docker's default bridge
// network makes one, without Docker: bridge docker0 (172.17.0.1/16) in
// the host's namespace, and a namespace of its own, role name, linked to
// it by a veth whose container end is eth0 (addr/16, an address of
// 172.17.0.0/16 such as 172.17.0.2, the first one Docker gives; default
// route via 172.17.0.1). Close removes the container's namespace with the
// others.
func (l *Lab) Container(ctx context.Context, host, name, addr string) error {
	if _, err := l.nsName(host); err != nil {
		return err
	}
	if !prefixRE.MatchString(name) {
		return fmt.Errorf("lab: bad container name %q", name)
	}
	ns := l.Name + "-" + name
	if _, err := os.Lstat(filepath.Join("/run/netns", ns)); err == nil {
		return fmt.Errorf("lab: namespace %s already exists", ns)
	}
	l.mu.Lock()
	if _, dup := l.NS[name]; dup {
		l.mu.Unlock()
		return fmt.Errorf("lab: role %q exists", name)
	}
	l.created = append(l.created, ns)
	l.NS[name] = ns
	l.mu.Unlock()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("lab: ip netns add %s: %v: %s", ns, err, bytes.TrimSpace(out))
	}
	veth := "veth" + l.vethID[:3] + name[:1] // Docker names them vethXXXXXXX
	cmds := []struct {
		role string
		args []string
	}{
		{name, []string{"ip", "link", "set", "lo", "up"}},
		{host, []string{"ip", "link", "add", "docker0", "type", "bridge"}},
		{host, []string{"ip", "addr", "add", "172.17.0.1/16", "dev", "docker0"}},
		{host, []string{"ip", "link", "set", "docker0", "up"}},
		{host, []string{"ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns}},
		{host, []string{"ip", "link", "set", veth, "master", "docker0", "up"}},
		{name, []string{"ip", "addr", "add", addr + "/16", "dev", "eth0"}},
		{name, []string{"ip", "link", "set", "eth0", "up"}},
		{name, []string{"ip", "route", "add", "default", "via", "172.17.0.1"}},
	}
	for _, c := range cmds {
		if _, err := l.Exec(ctx, c.role, c.args...); err != nil {
			return err
		}
	}
	return nil
}
