// Package lab builds a throw-away network-namespace lab for end-to-end tests
// and demos.
//
// Topology (all documentation addresses, all inside namespaces):
//
//	client 192.0.2.10/26     2001:db8:1::10/64   ──┐
//	admin  192.0.2.70/26     2001:db8:2::70/64   ──┤ router (forwarding v4+v6)
//	old    198.51.100.10/24  2001:db8:100::10/64 ──┤
//	new    203.0.113.20/24   2001:db8:200::20/64 ──┘
//
// The router side of each link uses .1/.65 (v4) and ::1 (v6). "old" and "new"
// each run a real OpenSSH sshd on their IPv4 address, port 22, accepting the
// lab's ed25519 identity for root.
//
// The root network namespace is never modified: veth pairs are created
// directly inside the router namespace with their peer placed straight into
// the leaf namespace, and all sysctls are set inside lab namespaces.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opsmigrate/migrate/remote"
)

// Roles of the lab namespaces.
const (
	RoleRouter = "router"
	RoleClient = "client"
	RoleOld    = "old"
	RoleNew    = "new"
	RoleAdmin  = "admin"
	// RoleBastion exists only with Options.OpenSSH.
	RoleBastion = "bastion"
)

// Roles lists every role, router first.
var Roles = []string{RoleRouter, RoleClient, RoleAdmin, RoleOld, RoleNew}

// Options configure New.
type Options struct {
	// Prefix of namespace names; default "mig". Namespaces are named
	// Prefix+"-"+6 random hex+"-"+role.
	Prefix string
	// Dir is the working directory for keys, configs and logs. Default: a
	// fresh os.MkdirTemp directory that Close removes. A caller-supplied Dir
	// is created if needed but never removed.
	Dir string
	// Log receives progress messages (optional).
	Log io.Writer
	// OpenSSH adds what the OpenSSH-habits tests need; off by default, so
	// other tests build exactly the lab they always did:
	//   - a "bastion" namespace (192.0.2.140/26, behind the router like
	//     admin) running its own sshd, its host key in KnownHosts;
	//   - two non-root users on every lab sshd (old, new, bastion), known
	//     only inside the sshd's own mount namespace, where a lab copy of
	//     /etc/passwd, /etc/group, /etc/shadow and /etc/sudoers is
	//     bind-mounted (nothing on the machine changes): SudoUser may
	//     run migrate's agents installed in OldStateDir and NewStateDir
	//     as root without a password, and nothing else (exactly
	//     remote.SudoersRule, as README gives it); PasswdUser's sudo asks
	//     for a password; SudoAllUser's is NOPASSWD: ALL.
	//     Both accept the lab identity. sudo keeps MIGRATE_STATE_DIR.
	//     The bastion has no sudo (/usr/bin/sudo hidden by /dev/null there).
	OpenSSH bool
	// NAT lists roles ("old", "new") that sit behind the router's 1:1
	// NAT, as a cloud provider puts a VM: the host holds only a private
	// IPv4 address (old 198.18.1.10/24, new 198.18.0.20/24, gateway .1)
	// and the router maps its public address (OldIP, NewIP, unchanged)
	// onto it with nft dnat/snat in its own namespace (table ip labnat).
	// sshd listens on the private address; KnownHosts names the public
	// one, which is what everyone dials. IPv6 is not NATed. Empty: the
	// default lab, exactly as before.
	NAT []string
	// Segment puts OLD and NEW on one bridged segment, the router's
	// link to OLD: OLD's router-side veth joins a bridge in the router
	// namespace that holds the router's 198.51.100.1/24 and
	// 2001:db8:100::1/64, and NEW gets a second interface eth1 on it
	// with NewSegIP (198.51.100.20/24) and NewSegIP6
	// (2001:db8:100::20/64). NEW keeps its own link and address
	// (203.0.113.20, its default route and sshd). For type = "direct".
	Segment bool
}

// Lab is a running namespace lab. Create it with New and always Close it.
type Lab struct {
	// Name is Prefix+"-"+random id; every namespace name starts with Name+"-".
	Name string
	Dir  string
	// NS maps role -> network namespace name.
	NS map[string]string

	OldIP, NewIP, ClientIP, AdminIP     netip.Addr
	OldIP6, NewIP6, ClientIP6, AdminIP6 netip.Addr

	// IdentityFile is the admin's private ed25519 key (OpenSSH format),
	// authorized for root on old and new.
	IdentityFile string
	// KnownHosts lists the host keys of old and new ("198.51.100.10 ssh-ed25519 ...").
	KnownHosts string
	// OldStateDir/NewStateDir are exported to ssh sessions on old/new as
	// MIGRATE_STATE_DIR (sshd SetEnv).
	OldStateDir, NewStateDir string
	// SSHDLog maps "old"/"new" -> sshd log file (sshd -e output).
	SSHDLog map[string]string

	// With Options.OpenSSH: the bastion's address and the two users.
	BastionIP            netip.Addr
	SudoUser, PasswdUser string
	// SudoAllUser may run anything as root without a password
	// (NOPASSWD: ALL): migrate installs its agent itself through it.
	SudoAllUser string

	// With Options.NAT: the private address a NATed host holds (the zero
	// Addr for a host that holds its public address). Held returns the
	// address a host holds either way.
	OldPrivIP, NewPrivIP netip.Addr

	// With Options.Segment: NEW's addresses on the segment it shares
	// with OLD and the router (eth1), and the bridge's name in the
	// router namespace.
	NewSegIP, NewSegIP6 netip.Addr
	SegmentBridge       string

	openSSH bool
	segment bool
	nat     map[string]bool

	log        io.Writer
	createdDir bool
	vethID     string

	mu      sync.Mutex
	closed  bool
	created []string // namespaces created, in creation order
	procs   []*proc
	logs    map[*exec.Cmd]string
	seq     int
	// sshd is each host's sshd command line (Reboot starts it again).
	sshd map[string][]string
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // non-nil if the lab itself waits for cmd
}

var (
	prefixRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	nsNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
)

type link struct {
	role         string
	routerV4, v4 string // CIDR
	routerV6, v6 string // CIDR
	gwV4, gwV6   string
}

var bastionLink = link{role: RoleBastion, routerV4: "192.0.2.129/26", v4: "192.0.2.140/26", routerV6: "2001:db8:3::1/64", v6: "2001:db8:3::80/64", gwV4: "192.0.2.129", gwV6: "2001:db8:3::1"}

// roles are this lab's roles, router first.
func (l *Lab) roles() []string {
	if l.openSSH {
		return append(append([]string(nil), Roles...), RoleBastion)
	}
	return Roles
}

func (l *Lab) links() []link {
	out := append([]link(nil), links...)
	for i, lk := range out {
		if p, ok := natPrivate[lk.role]; ok && l.nat[lk.role] {
			out[i].routerV4, out[i].v4, out[i].gwV4 = p.router, p.host, p.gw
		}
	}
	if l.openSSH {
		out = append(out, bastionLink)
	}
	return out
}

// natPrivate are the private IPv4 addresses of the NATed hosts' links.
var natPrivate = map[string]struct{ router, host, gw, addr string }{
	RoleOld: {"198.18.1.1/24", "198.18.1.10/24", "198.18.1.1", "198.18.1.10"},
	RoleNew: {"198.18.0.1/24", "198.18.0.20/24", "198.18.0.1", "198.18.0.20"},
}

// Held is the IPv4 address role's host holds: its private address when it
// is behind the router's NAT, else its public one.
func (l *Lab) Held(role string) netip.Addr {
	switch role {
	case RoleOld:
		if l.OldPrivIP.IsValid() {
			return l.OldPrivIP
		}
		return l.OldIP
	case RoleNew:
		if l.NewPrivIP.IsValid() {
			return l.NewPrivIP
		}
		return l.NewIP
	}
	return netip.Addr{}
}

// buildNAT makes the router the provider's 1:1 NAT for the NATed hosts:
// packets to the public address go to the private one, and the private
// address's packets leave with the public one as their source.
func (l *Lab) buildNAT(ctx context.Context) error {
	if len(l.nat) == 0 {
		return nil
	}
	var pre, post strings.Builder
	for _, r := range []struct {
		role   string
		public netip.Addr
	}{{RoleOld, l.OldIP}, {RoleNew, l.NewIP}} {
		if !l.nat[r.role] {
			continue
		}
		priv := natPrivate[r.role].addr
		fmt.Fprintf(&pre, "    ip daddr %s dnat to %s\n", r.public, priv)
		fmt.Fprintf(&post, "    ip saddr %s snat to %s\n", priv, r.public)
	}
	rules := "table ip labnat {\n  chain pre {\n    type nat hook prerouting priority dstnat; policy accept;\n" + pre.String() +
		"  }\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n" + post.String() + "  }\n}\n"
	path := filepath.Join(l.Dir, "router-nat.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return err
	}
	l.logf("router: 1:1 NAT\n%s", rules)
	_, err := l.Exec(ctx, RoleRouter, "nft", "-f", path)
	return err
}

var links = []link{
	{role: RoleClient, routerV4: "192.0.2.1/26", v4: "192.0.2.10/26", routerV6: "2001:db8:1::1/64", v6: "2001:db8:1::10/64", gwV4: "192.0.2.1", gwV6: "2001:db8:1::1"},
	{role: RoleAdmin, routerV4: "192.0.2.65/26", v4: "192.0.2.70/26", routerV6: "2001:db8:2::1/64", v6: "2001:db8:2::70/64", gwV4: "192.0.2.65", gwV6: "2001:db8:2::1"},
	{role: RoleOld, routerV4: "198.51.100.1/24", v4: "198.51.100.10/24", routerV6: "2001:db8:100::1/64", v6: "2001:db8:100::10/64", gwV4: "198.51.100.1", gwV6: "2001:db8:100::1"},
	{role: RoleNew, routerV4: "203.0.113.1/24", v4: "203.0.113.20/24", routerV6: "2001:db8:200::1/64", v6: "2001:db8:200::20/64", gwV4: "203.0.113.1", gwV6: "2001:db8:200::1"},
}

// New builds the lab: namespaces, links, addresses, routes, keys and the two
// sshd. It returns once both sshd accept TCP connections from the admin
// namespace. On any error everything built so far is torn down.
func New(ctx context.Context, opts Options) (l *Lab, err error) {
	prefix := opts.Prefix
	if prefix == "" {
		prefix = "mig"
	}
	if !prefixRE.MatchString(prefix) {
		return nil, fmt.Errorf("lab: invalid prefix %q", prefix)
	}
	var rb [3]byte
	if _, err := rand.Read(rb[:]); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(rb[:])

	l = &Lab{
		Name:      prefix + "-" + id,
		NS:        map[string]string{},
		OldIP:     netip.MustParseAddr("198.51.100.10"),
		NewIP:     netip.MustParseAddr("203.0.113.20"),
		ClientIP:  netip.MustParseAddr("192.0.2.10"),
		AdminIP:   netip.MustParseAddr("192.0.2.70"),
		OldIP6:    netip.MustParseAddr("2001:db8:100::10"),
		NewIP6:    netip.MustParseAddr("2001:db8:200::20"),
		ClientIP6: netip.MustParseAddr("2001:db8:1::10"),
		AdminIP6:  netip.MustParseAddr("2001:db8:2::70"),
		SSHDLog:   map[string]string{},
		log:       opts.Log,
		vethID:    id,
		logs:      map[*exec.Cmd]string{},
		sshd:      map[string][]string{},
		openSSH:   opts.OpenSSH,
		nat:       map[string]bool{},
		segment:   opts.Segment,
	}
	if opts.Segment {
		if len(opts.NAT) > 0 {
			return nil, fmt.Errorf("lab: Segment and NAT do not go together")
		}
		l.NewSegIP, l.NewSegIP6 = netip.MustParseAddr("198.51.100.20"), netip.MustParseAddr("2001:db8:100::20")
		l.SegmentBridge = "b" + id + "s"
	}
	for _, r := range opts.NAT {
		switch r {
		case RoleOld:
			l.OldPrivIP = netip.MustParseAddr(natPrivate[r].addr)
		case RoleNew:
			l.NewPrivIP = netip.MustParseAddr(natPrivate[r].addr)
		default:
			return nil, fmt.Errorf("lab: NAT role %q: only old and new can be behind the router's NAT", r)
		}
		l.nat[r] = true
	}
	if opts.OpenSSH {
		l.BastionIP = netip.MustParseAddr("192.0.2.140")
		l.SudoUser, l.PasswdUser, l.SudoAllUser = "migsudo", "migpasswd", "migall"
	}
	for _, r := range l.roles() {
		l.NS[r] = l.Name + "-" + r
	}

	if opts.Dir == "" {
		d, err := os.MkdirTemp("", l.Name+"-")
		if err != nil {
			return nil, err
		}
		l.Dir, l.createdDir = d, true
	} else {
		d, err := filepath.Abs(opts.Dir)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		l.Dir = d
	}

	defer func() {
		if err != nil {
			if cerr := l.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("lab: cleanup after failed New: %w", cerr))
			}
			l = nil
		}
	}()

	if err := l.buildNetwork(ctx); err != nil {
		return l, err
	}
	if err := l.buildNAT(ctx); err != nil {
		return l, err
	}
	if err := l.setupSSH(ctx); err != nil {
		return l, err
	}
	l.logf("lab %s ready (dir %s)", l.Name, l.Dir)
	return l, nil
}

func (l *Lab) logf(format string, args ...any) {
	if l.log != nil {
		fmt.Fprintf(l.log, "lab: "+format+"\n", args...)
	}
}

func (l *Lab) buildNetwork(ctx context.Context) error {
	for _, r := range l.roles() {
		name := l.NS[r]
		if !nsNameRE.MatchString(name) {
			return fmt.Errorf("lab: bad namespace name %q", name)
		}
		l.logf("creating netns %s", name)
		// Never adopt (and later delete) a namespace someone else owns.
		if _, err := os.Lstat(filepath.Join("/run/netns", name)); err == nil {
			return fmt.Errorf("lab: namespace %s already exists", name)
		}
		// Record before creating, so an add interrupted by ctx is still
		// cleaned up.
		l.mu.Lock()
		l.created = append(l.created, name)
		l.mu.Unlock()
		if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
			if bytes.Contains(out, []byte("File exists")) {
				l.mu.Lock()
				l.created = l.created[:len(l.created)-1]
				l.mu.Unlock()
			}
			return fmt.Errorf("lab: ip netns add %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		// Inside the new namespace only: no DAD (addresses usable at once and
		// snapshots don't flip from "tentative"), lo up.
		for _, args := range nsInit {
			if _, err := l.Exec(ctx, r, args...); err != nil {
				return err
			}
		}
	}
	for _, args := range [][]string{
		{"sysctl", "-q", "-w", "net.ipv4.ip_forward=1"},
		{"sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"},
	} {
		if _, err := l.Exec(ctx, RoleRouter, args...); err != nil {
			return err
		}
	}

	router := l.NS[RoleRouter]
	if l.segment {
		for _, args := range [][]string{
			{"ip", "link", "add", l.SegmentBridge, "type", "bridge"},
			{"ip", "link", "set", l.SegmentBridge, "up"},
		} {
			if _, err := l.Exec(ctx, RoleRouter, args...); err != nil {
				return err
			}
		}
	}
	for _, lk := range l.links() {
		l.logf("linking %s:%s <-> %s:eth0", router, "v"+l.vethID+lk.role[:1], l.NS[lk.role])
		for _, c := range l.linkCommands(lk) {
			if _, err := l.Exec(ctx, c.role, c.args...); err != nil {
				return err
			}
		}
	}
	if l.segment {
		// NEW's second interface, on the segment.
		rv := "v" + l.vethID + "s"
		for _, c := range []struct {
			role string
			args []string
		}{
			{RoleRouter, []string{"ip", "link", "add", rv, "type", "veth", "peer", "name", "eth1", "netns", l.NS[RoleNew]}},
			{RoleRouter, []string{"ip", "link", "set", rv, "master", l.SegmentBridge}},
			{RoleRouter, []string{"ip", "link", "set", rv, "up"}},
			{RoleNew, []string{"ip", "addr", "add", l.NewSegIP.String() + "/24", "dev", "eth1"}},
			{RoleNew, []string{"ip", "-6", "addr", "add", l.NewSegIP6.String() + "/64", "dev", "eth1", "nodad"}},
			{RoleNew, []string{"ip", "link", "set", "eth1", "up"}},
		} {
			if _, err := l.Exec(ctx, c.role, c.args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// nsInit runs in every new namespace: no DAD (addresses usable at once
// and snapshots don't flip from "tentative"), lo up.
var nsInit = [][]string{
	{"sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"},
	{"sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"},
	{"ip", "link", "set", "lo", "up"},
}

type labCmd struct {
	role string
	args []string
}

// linkCommands connect lk's namespace to the router (a veth pair created
// inside the router namespace; the peer is born in the leaf namespace as
// eth0, so nothing ever appears in the root namespace) and give it its
// addresses and default routes.
func (l *Lab) linkCommands(lk link) []labCmd {
	rv := "v" + l.vethID + lk.role[:1] // 8 chars, well under IFNAMSIZ
	leaf := l.NS[lk.role]
	// On the segment, OLD's link is a port of the bridge, which holds
	// the router's addresses.
	rdev := rv
	cmds := []labCmd{{RoleRouter, []string{"ip", "link", "add", rv, "type", "veth", "peer", "name", "eth0", "netns", leaf}}}
	if l.segment && lk.role == RoleOld {
		rdev = l.SegmentBridge
		cmds = append(cmds, labCmd{RoleRouter, []string{"ip", "link", "set", rv, "master", l.SegmentBridge}})
	}
	return append(cmds, []labCmd{
		{RoleRouter, []string{"ip", "addr", "add", lk.routerV4, "dev", rdev}},
		{RoleRouter, []string{"ip", "-6", "addr", "add", lk.routerV6, "dev", rdev, "nodad"}},
		{RoleRouter, []string{"ip", "link", "set", rv, "up"}},
		{lk.role, []string{"ip", "addr", "add", lk.v4, "dev", "eth0"}},
		{lk.role, []string{"ip", "-6", "addr", "add", lk.v6, "dev", "eth0", "nodad"}},
		{lk.role, []string{"ip", "link", "set", "eth0", "up"}},
		{lk.role, []string{"ip", "route", "add", "default", "via", lk.gwV4, "dev", "eth0"}},
		{lk.role, []string{"ip", "-6", "route", "add", "default", "via", lk.gwV6, "dev", "eth0"}},
	}...)
}

func (l *Lab) setupSSH(ctx context.Context) error {
	keygen := func(path string) (string, error) {
		out, err := exec.CommandContext(ctx, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", path).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("lab: ssh-keygen %s: %v: %s", path, err, bytes.TrimSpace(out))
		}
		pub, err := os.ReadFile(path + ".pub")
		if err != nil {
			return "", err
		}
		f := strings.Fields(string(pub))
		if len(f) < 2 {
			return "", fmt.Errorf("lab: unexpected public key in %s.pub: %q", path, pub)
		}
		return f[0] + " " + f[1], nil
	}

	l.IdentityFile = filepath.Join(l.Dir, "id_ed25519")
	adminPub, err := keygen(l.IdentityFile)
	if err != nil {
		return err
	}
	authKeys := filepath.Join(l.Dir, "authorized_keys")
	if err := os.WriteFile(authKeys, []byte(adminPub+" lab-admin\n"), 0o600); err != nil {
		return err
	}
	l.OldStateDir = filepath.Join(l.Dir, "old-state")
	l.NewStateDir = filepath.Join(l.Dir, "new-state")
	var etc map[string]string // lab copies of /etc files, bind-mounted for sshd
	if l.openSSH {
		// sshd reads authorized_keys as the user logging in: the non-root
		// users must reach it. The directory stays unlistable.
		if err := os.Chmod(l.Dir, 0o711); err != nil {
			return err
		}
		if err := os.Chmod(authKeys, 0o644); err != nil {
			return err
		}
		var err error
		if etc, err = l.labUsers(); err != nil {
			return err
		}
	}
	// sshd's privilege-separation directory; a system directory sshd always
	// expects, left in place (other sshd may rely on it).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return err
	}

	hosts := []struct {
		role  string
		addr  netip.Addr
		state string
	}{
		{RoleOld, l.OldIP, l.OldStateDir},
		{RoleNew, l.NewIP, l.NewStateDir},
	}
	if l.openSSH {
		hosts = append(hosts, struct {
			role  string
			addr  netip.Addr
			state string
		}{RoleBastion, l.BastionIP, filepath.Join(l.Dir, "bastion-state")})
	}
	// sshd listens on what the host holds; known_hosts names the public
	// address (h.addr), which is dialled.
	listen := func(role string, a netip.Addr) netip.Addr {
		if h := l.Held(role); h.IsValid() {
			return h
		}
		return a
	}
	var kh strings.Builder
	for _, h := range hosts {
		// root's, 0700: the agent refuses any other state directory.
		if err := os.MkdirAll(h.state, 0o700); err != nil {
			return err
		}
		hostKey := filepath.Join(l.Dir, h.role+"_host_ed25519")
		hostPub, err := keygen(hostKey)
		if err != nil {
			return err
		}
		fmt.Fprintf(&kh, "%s %s\n", h.addr, hostPub)
		cfg := filepath.Join(l.Dir, h.role+"_sshd_config")
		conf := strings.Join([]string{
			"# generated by package lab for " + l.NS[h.role],
			"ListenAddress " + listen(h.role, h.addr).String() + ":22",
			"HostKey " + hostKey,
			"PidFile none",
			"UsePAM no",
			"StrictModes no",
			"PermitRootLogin prohibit-password",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PubkeyAuthentication yes",
			"AuthorizedKeysFile " + authKeys,
			// SHLVL=1: bash, run by sshd, then skips ~/.bashrc (it only
			// sources it for a top-level shell). This machine's root
			// .bashrc runs `pyenv rehash`, whose lock, left behind by a
			// session a test kills, stalls every later session for 60 s.
			// The agent's boot unit goes to a lab directory, never the
			// machine's /etc/systemd; "systemd is PID 1" is the lab's
			// runtime directory existing (SystemdRuntime; absent unless
			// a test makes it).
			"SetEnv MIGRATE_STATE_DIR=" + h.state + " MIGRATE_SYSTEMD_DIR=" + l.SystemdDir(h.role) + " MIGRATE_SYSTEMD_RUNTIME=" + l.SystemdRuntime(h.role) + " SHLVL=1",
			"PrintMotd no",
			"PrintLastLog no",
			"UseDNS no",
			"MaxStartups 100",
			"MaxSessions 100",
			"LogLevel VERBOSE",
			"Subsystem sftp internal-sftp",
			"",
		}, "\n")
		if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "/usr/sbin/sshd", "-t", "-f", cfg).CombinedOutput(); err != nil {
			return fmt.Errorf("lab: sshd -t -f %s: %v: %s", cfg, err, bytes.TrimSpace(out))
		}
		logPath := filepath.Join(l.Dir, h.role+"-sshd.log")
		l.SSHDLog[h.role] = logPath
		sshd := []string{"/usr/sbin/sshd", "-D", "-e", "-f", cfg}
		if etc != nil {
			// `ip netns exec` runs the command in a mount namespace of its
			// own (slave of the root one): these binds stay inside it and
			// go away with sshd and its sessions.
			script := ""
			for _, f := range []string{"passwd", "group", "shadow", "sudoers"} {
				script += fmt.Sprintf("mount --bind %s /etc/%s && ", etc[f], f)
			}
			if h.role == RoleBastion {
				// The bastion has no sudo: for the "not installed" error.
				script += "mount --bind /dev/null /usr/bin/sudo && "
			}
			sshd = []string{"sh", "-c", script + `exec "$@"`, "sh", "/usr/sbin/sshd", "-D", "-e", "-f", cfg}
		}
		l.sshd[h.role] = sshd
		cmd, err := l.Command(h.role, sshd...)
		if err != nil {
			return err
		}
		lf, err := os.Create(logPath)
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = lf, lf
		l.logf("starting sshd in %s on %s:22", l.NS[h.role], h.addr)
		err = l.startCmd(cmd, true)
		lf.Close()
		if err != nil {
			return err
		}
	}
	l.KnownHosts = filepath.Join(l.Dir, "known_hosts")
	if err := os.WriteFile(l.KnownHosts, []byte(kh.String()), 0o600); err != nil {
		return err
	}

	for _, h := range hosts {
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		err := l.waitSSHD(wctx, h.role, netip.AddrPortFrom(h.addr, 22).String())
		cancel()
		if err != nil {
			logb, _ := os.ReadFile(l.SSHDLog[h.role])
			return fmt.Errorf("lab: sshd in %s not reachable: %w; sshd log:\n%s", l.NS[h.role], err, logb)
		}
	}
	return nil
}

// waitSSHD is WaitTCP from admin that also gives up early if sshd died.
func (l *Lab) waitSSHD(ctx context.Context, role, addr string) error {
	var done chan struct{}
	l.mu.Lock()
	for _, p := range l.procs {
		if p.done != nil && len(p.cmd.Args) > 3 && p.cmd.Args[3] == l.NS[role] {
			done = p.done
		}
	}
	l.mu.Unlock()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-done:
			cancel()
		case <-wctx.Done():
		}
	}()
	err := l.WaitTCP(wctx, RoleAdmin, addr)
	if err != nil && done != nil {
		select {
		case <-done:
			return errors.New("sshd exited")
		default:
		}
	}
	return err
}

// nsName returns the namespace of role after checking that it is one of this
// lab's namespaces and that it currently exists.
func (l *Lab) nsName(role string) (string, error) {
	name, ok := l.NS[role]
	if !ok || name == "" {
		return "", fmt.Errorf("lab: unknown role %q", role)
	}
	if !nsNameRE.MatchString(name) || !strings.HasPrefix(name, l.Name+"-") {
		return "", fmt.Errorf("lab: refusing suspicious namespace name %q", name)
	}
	if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
		return "", fmt.Errorf("lab: namespace %s (%s) does not exist: %w", name, role, err)
	}
	return name, nil
}

// Command returns an unstarted `ip netns exec <ns> args...` command for role,
// set up to run in its own process group. Start it with StartCmd so Close
// kills it, or run it yourself.
func (l *Lab) Command(role string, args ...string) (*exec.Cmd, error) {
	return l.command(context.Background(), role, args...)
}

func (l *Lab) command(ctx context.Context, role string, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, errors.New("lab: no command")
	}
	ns, err := l.nsName(role)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { killGroup(cmd); return nil }
	return cmd, nil
}

// Exec runs args inside role's namespace and returns combined output. The
// error includes the output.
func (l *Lab) Exec(ctx context.Context, role string, args ...string) ([]byte, error) {
	cmd, err := l.command(ctx, role, args...)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	cmd.WaitDelay = 2 * time.Second
	err = cmd.Run()
	out := buf.Bytes()
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return out, fmt.Errorf("lab: %s: %s: %w: %s", role, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// Start starts args in the background inside role's namespace, in its own
// process group, with stdout+stderr going to a log file in Dir (see LogPath).
// Close kills the whole process group. Close does not reap the process: call
// cmd.Wait if you need its exit status.
func (l *Lab) Start(role string, args ...string) (*exec.Cmd, error) {
	cmd, err := l.Command(role, args...)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.seq++
	seq := l.seq
	l.mu.Unlock()
	base := filepath.Base(args[0])
	if len(args) > 1 && !strings.HasPrefix(args[1], "-") {
		base += "-" + filepath.Base(args[1])
	}
	logPath := filepath.Join(l.Dir, fmt.Sprintf("%s-%02d-%s.log", role, seq, sanitize(base)))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := l.startCmd(cmd, false); err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.logs[cmd] = logPath
	l.mu.Unlock()
	return cmd, nil
}

// StartCmd starts a command from Command (or any command whose
// SysProcAttr.Setpgid is set) and registers it so Close kills its process
// group. Like Start, Close does not reap it.
func (l *Lab) StartCmd(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil || !cmd.SysProcAttr.Setpgid {
		return errors.New("lab: StartCmd needs a command with SysProcAttr.Setpgid (use Lab.Command)")
	}
	return l.startCmd(cmd, false)
}

func (l *Lab) startCmd(cmd *exec.Cmd, reap bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("lab: closed")
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lab: start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	p := &proc{cmd: cmd}
	if reap {
		p.done = make(chan struct{})
		go func() {
			_ = cmd.Wait()
			close(p.done)
		}()
	}
	l.procs = append(l.procs, p)
	return nil
}

// LogPath returns the log file of a command returned by Start ("" if unknown).
func (l *Lab) LogPath(cmd *exec.Cmd) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.logs[cmd]
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

// killGroup SIGKILLs cmd's process group, unless the leader has already been
// reaped (its pgid could then have been reused). os.Process.Signal knows
// whether Wait reaped the process and is safe to call concurrently with Wait.
func killGroup(cmd *exec.Cmd) {
	p := cmd.Process
	if p == nil || p.Pid <= 1 {
		return
	}
	if err := p.Signal(syscall.Signal(0)); err != nil {
		return // done (reaped) or not ours
	}
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}

// SSHArgs returns ssh client options that authenticate as the lab admin and
// strictly check host keys against KnownHosts (no user/system config).
func (l *Lab) SSHArgs() []string {
	return []string{
		"-F", "none",
		"-i", l.IdentityFile,
		"-o", "IdentitiesOnly=yes",
		"-o", "UserKnownHostsFile=" + l.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "BatchMode=yes",
		"-o", "ConnectTimeout=5",
	}
}

// Snapshot returns the nft ruleset, policy rules, routes (all tables, v4 and
// v6), addresses and the named sysctls of role's namespace, each under a
// "### ..." header. Sysctls that don't exist print "<absent>". The output is
// deterministic for an unchanged namespace (nft counters, if any, are not).
func (l *Lab) Snapshot(ctx context.Context, role string, sysctls ...string) (string, error) {
	var b strings.Builder
	for _, args := range [][]string{
		{"nft", "list", "ruleset"},
		{"ip", "rule"},
		{"ip", "-6", "rule"},
		{"ip", "route", "show", "table", "all"},
		{"ip", "-6", "route", "show", "table", "all"},
		{"ip", "addr"},
	} {
		out, err := l.Exec(ctx, role, args...)
		// While another lab's namespaces are being deleted, a dump can
		// carry the kernel's transient "Peer netns reference is
		// invalid." (seen with ip addr): read again, never compare it.
		for try := 0; err == nil && bytes.Contains(out, []byte("Peer netns reference is invalid")) && try < 20; try++ {
			time.Sleep(100 * time.Millisecond)
			out, err = l.Exec(ctx, role, args...)
		}
		if err != nil {
			return "", err
		}
		section(&b, strings.Join(args, " "), string(out))
	}
	for _, name := range sysctls {
		if name == "" || strings.HasPrefix(name, "-") || strings.ContainsAny(name, " \t\n=") {
			return "", fmt.Errorf("lab: bad sysctl name %q", name)
		}
		out, err := l.Exec(ctx, role, "sysctl", "-n", name)
		val := string(out)
		if err != nil {
			if ctx.Err() != nil || !(strings.Contains(val, "cannot stat") || strings.Contains(val, "No such file")) {
				return "", err
			}
			val = "<absent>\n"
		}
		section(&b, "sysctl "+name, val)
	}
	return b.String(), nil
}

func section(b *strings.Builder, title, body string) {
	b.WriteString("### " + title + "\n")
	b.WriteString(body)
	if body != "" && !strings.HasSuffix(body, "\n") {
		b.WriteString("\n")
	}
}

// Dial opens a connection from inside role's namespace (the socket lives in
// that namespace for its whole life). addr must be IP:port.
func (l *Lab) Dial(ctx context.Context, role, network, addr string) (net.Conn, error) {
	// Only IP literals: a name lookup could run on other threads, outside the
	// lab namespace.
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("lab: dial %q: %w", addr, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("lab: dial %q: host must be an IP literal", addr)
	}
	ns, err := l.nsName(role)
	if err != nil {
		return nil, err
	}
	return dialInNS(ctx, filepath.Join("/run/netns", ns), network, addr)
}

// WaitTCP polls from inside role's namespace until a TCP connection to
// addrport succeeds, or ctx ends.
func (l *Lab) WaitTCP(ctx context.Context, role, addrport string) error {
	var last error
	for {
		actx, cancel := context.WithTimeout(ctx, time.Second)
		c, err := l.Dial(actx, role, "tcp", addrport)
		cancel()
		if err == nil {
			c.Close()
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab: wait for tcp %s from %s: %w (last error: %v)", addrport, role, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Close kills every process the lab started (whole process groups) and any
// process still inside a lab namespace, deletes the namespaces and removes
// Dir if New created it. It is safe to call more than once.
func (l *Lab) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := l.procs
	created := l.created
	l.mu.Unlock()

	var errs []error
	for _, p := range procs {
		killGroup(p.cmd)
	}
	for _, p := range procs {
		if p.done != nil {
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				errs = append(errs, fmt.Errorf("lab: %s did not exit", strings.Join(p.cmd.Args, " ")))
			}
		}
	}

	for i := len(created) - 1; i >= 0; i-- {
		name := created[i]
		if !nsNameRE.MatchString(name) || !strings.HasPrefix(name, l.Name+"-") {
			errs = append(errs, fmt.Errorf("lab: refusing to delete namespace %q", name))
			continue
		}
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err != nil {
			continue // never created (or already gone)
		}
		if err := killNSProcs(name); err != nil {
			errs = append(errs, err)
		}
		if out, err := exec.Command("ip", "netns", "delete", name).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("lab: ip netns delete %s: %v: %s", name, err, bytes.TrimSpace(out)))
		} else {
			l.logf("deleted netns %s", name)
		}
	}

	if l.createdDir && l.Dir != "" {
		if err := os.RemoveAll(l.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killNSProcs SIGKILLs every process living in namespace name (e.g. sshd
// session processes, which sshd moves into their own session/process group).
func killNSProcs(name string) error {
	var last []int
	for attempt := 0; attempt < 50; attempt++ {
		out, err := exec.Command("ip", "netns", "pids", name).CombinedOutput()
		if err != nil {
			return fmt.Errorf("lab: ip netns pids %s: %v: %s", name, err, bytes.TrimSpace(out))
		}
		var pids []int
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err == nil && pid > 1 && pid != os.Getpid() {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return nil
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		last = pids
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("lab: processes %v remain in namespace %s", last, name)
}

// RouterIf is the name of the router's interface facing role's namespace.
func (l *Lab) RouterIf(role string) string {
	return "v" + l.vethID + role[:1]
}

// labUsers writes the lab's copies of /etc/passwd, group, shadow (the
// machine's entries plus SudoUser and PasswdUser) and a sudoers of its own,
// and makes the users' home directories. It returns the copies by name.
func (l *Lab) labUsers() (map[string]string, error) {
	dir := filepath.Join(l.Dir, "etc")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := os.ReadFile("/etc/group")
	if err != nil {
		return nil, err
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, b := range [][]byte{passwd, group} {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Split(line, ":"); len(f) > 2 {
				used[f[2]] = true
			}
		}
	}
	withNL := func(b []byte) string {
		s := string(b)
		if s != "" && !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		return s
	}
	// root logs in with /bin/sh here: bash run by sshd reads root's
	// ~/.bashrc, which on some machines runs slow or lock-taking tools
	// (e.g. pyenv rehash, whose lock file a killed session leaves behind).
	var pl []string
	for _, line := range strings.Split(withNL(passwd), "\n") {
		if f := strings.Split(line, ":"); len(f) == 7 && f[0] == "root" {
			f[6] = "/bin/sh"
			line = strings.Join(f, ":")
		}
		pl = append(pl, line)
	}
	p, g, sh := strings.Join(pl, "\n"), withNL(group), withNL(shadow)
	id := 61000
	for _, u := range []string{l.SudoUser, l.PasswdUser, l.SudoAllUser} {
		for used[strconv.Itoa(id)] {
			id++
		}
		used[strconv.Itoa(id)] = true
		home := filepath.Join(l.Dir, "home-"+u)
		if err := os.MkdirAll(home, 0o755); err != nil {
			return nil, err
		}
		if err := os.Chown(home, id, id); err != nil {
			return nil, err
		}
		p += fmt.Sprintf("%s:x:%d:%d:lab user:%s:/bin/sh\n", u, id, id, home)
		g += fmt.Sprintf("%s:x:%d:\n", u, id)
		// "*": no password, not locked (sshd refuses locked accounts).
		sh += fmt.Sprintf("%s:*:19000:0:99999:7:::\n", u)
	}
	sudoers := strings.Join([]string{
		"# generated by package lab: bind-mounted over /etc/sudoers for the lab's sshd only",
		"Defaults env_reset",
		`Defaults env_keep += "MIGRATE_STATE_DIR MIGRATE_SYSTEMD_DIR MIGRATE_SYSTEMD_RUNTIME"`,
		"Defaults !lecture",
		"root ALL=(ALL:ALL) ALL",
		// Exactly the rule README gives: migrate's agents, nothing else.
		remote.SudoersRule(l.SudoUser, l.OldStateDir),
		remote.SudoersRule(l.SudoUser, l.NewStateDir),
		l.PasswdUser + " ALL=(root) ALL",
		l.SudoAllUser + " ALL=(root) NOPASSWD: ALL",
		"",
	}, "\n")
	out := map[string]string{}
	for name, f := range map[string]struct {
		text string
		mode os.FileMode
	}{
		"passwd":  {p, 0o644},
		"group":   {g, 0o644},
		"shadow":  {sh, 0o640},
		"sudoers": {sudoers, 0o440},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(f.text), f.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(path, f.mode); err != nil {
			return nil, err
		}
		out[name] = path
	}
	return out, nil
}

// DenySSHFromAdmin makes sshd on old and new unreachable from the admin
// namespace (TCP reset), so that only the bastion reaches them. It adds an
// nft table "labssh" inside the old and new namespaces only. Needs
// Options.OpenSSH.
func (l *Lab) DenySSHFromAdmin(ctx context.Context) error {
	if !l.openSSH {
		return errors.New("lab: DenySSHFromAdmin needs Options.OpenSSH")
	}
	for _, role := range []string{RoleOld, RoleNew} {
		for _, args := range [][]string{
			{"nft", "add", "table", "inet", "labssh"},
			{"nft", "add", "chain", "inet", "labssh", "in", "{", "type", "filter", "hook", "input", "priority", "-10", ";", "policy", "accept", ";", "}"},
			{"nft", "add", "rule", "inet", "labssh", "in", "ip", "saddr", l.AdminIP.String(), "tcp", "dport", "22", "reject", "with", "tcp", "reset"},
		} {
			if _, err := l.Exec(ctx, role, args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// BlockSSHFromAdmin makes role's sshd refuse the admin namespace (TCP reset,
// established connections included): the host is down as far as the
// admin's migrate can tell, while its kernel still forwards and answers
// through the tunnel. A table "labblock" in role's namespace only;
// UnblockSSHFromAdmin removes it.
func (l *Lab) BlockSSHFromAdmin(ctx context.Context, role string) error {
	for _, args := range [][]string{
		{"nft", "add", "table", "inet", "labblock"},
		{"nft", "add", "chain", "inet", "labblock", "in", "{", "type", "filter", "hook", "input", "priority", "-10", ";", "policy", "accept", ";", "}"},
		{"nft", "add", "rule", "inet", "labblock", "in", "ip", "saddr", l.AdminIP.String(), "tcp", "dport", "22", "reject", "with", "tcp", "reset"},
	} {
		if out, err := l.Exec(ctx, role, args...); err != nil {
			return fmt.Errorf("block ssh on %s: %v: %s", role, err, out)
		}
	}
	return nil
}

// UnblockSSHFromAdmin undoes BlockSSHFromAdmin.
func (l *Lab) UnblockSSHFromAdmin(ctx context.Context, role string) error {
	if out, err := l.Exec(ctx, role, "nft", "delete", "table", "inet", "labblock"); err != nil {
		return fmt.Errorf("unblock ssh on %s: %v: %s", role, err, out)
	}
	return nil
}
