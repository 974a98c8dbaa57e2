package remote

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"
)

// Target is how to reach one host.
type Target struct {
	Name         string // "old" / "new", for messages
	User         string
	Address      string
	Port         int
	IdentityFile string // optional
	KnownHosts   string // required
	Sudo         bool
	// IdentityFiles are optional keys (from ~/.ssh/config): offered when
	// IdentityFile is empty; a missing one is skipped.
	IdentityFiles []string
	// Jumps are ProxyJump hosts, dialled in order; the last one opens the
	// TCP connection to this target. Each is verified against its own
	// KnownHosts like any host. Name is the hop as written.
	Jumps []Target
	// Timeout is how long the host may stay silent (no answer to SSH
	// keepalives, or from the agent to a call) before migrate gives up on
	// it with a DeadLinkError; 0 means DefaultTimeout.
	Timeout time.Duration

	label string // "host old: jump host bastion" for a hop
}

func (t Target) hostport() string { return net.JoinHostPort(t.Address, strconv.Itoa(t.Port)) }

// what names the target in messages: "host old", or for a jump host
// "host old: jump host bastion".
func (t Target) what() string {
	if t.label != "" {
		return t.label
	}
	return "host " + t.Name
}

// HostKeyError is an unknown or changed host key.
type HostKeyError struct {
	Target  Target
	Changed bool
	Key     ssh.PublicKey
	Line    int
	Via     string // the jump host the connection came through, if any
}

func (e *HostKeyError) Error() string {
	fp := ssh.FingerprintSHA256(e.Key)
	if e.Changed {
		return fmt.Sprintf("%s (%s): HOST KEY CHANGED: the server presented %s %s, which does not match line %d of %s. This may be an attack, or the host was reinstalled. If you know why, remove the old key with `ssh-keygen -f %s -R %s` and add the new one",
			e.Target.what(), e.Target.hostport(), e.Key.Type(), fp, e.Line, e.Target.KnownHosts, e.Target.KnownHosts, knownhosts.Normalize(e.Target.hostport()))
	}
	where := ""
	if e.Via != "" {
		where = fmt.Sprintf(" (run it where %s is reachable, e.g. on jump host %s)", e.Target.Address, e.Via)
	}
	return fmt.Sprintf("%s (%s): unknown host key %s %s: it is not in %s. Check the fingerprint out of band, then add it, e.g. `ssh-keyscan -p %d %s >> %s`%s",
		e.Target.what(), e.Target.hostport(), e.Key.Type(), fp, e.Target.KnownHosts, e.Target.Port, e.Target.Address, e.Target.KnownHosts, where)
}

// AuthError is a failed SSH authentication.
type AuthError struct {
	Target Target
	Tried  []string
	Err    error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("%s: SSH authentication as %q at %s failed (tried: %s): %v. Check that the key is in ~%s/.ssh/authorized_keys on the host, or set identity_file in the host block (IdentityFile in ~/.ssh/config)",
		e.Target.what(), e.Target.User, e.Target.hostport(), strings.Join(e.Tried, ", "), e.Err, e.Target.User)
}

func (e *AuthError) Unwrap() error { return e.Err }

// signers returns the keys to offer: identity_file, else the ssh-agent and
// the usual default files.
func signers(t Target) ([]ssh.Signer, []string, func(), error) {
	var out []ssh.Signer
	var tried []string
	cleanup := func() {}
	load := func(path string, must bool) error {
		b, err := os.ReadFile(path)
		if err != nil {
			if must {
				return fmt.Errorf("%s: read identity_file %s: %w", t.what(), path, err)
			}
			return nil
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				if must {
					return fmt.Errorf("%s: identity_file %s is protected by a passphrase; load it into ssh-agent (ssh-add %s) and leave identity_file unset", t.what(), path, path)
				}
				return nil
			}
			return fmt.Errorf("%s: identity file %s: %w", t.what(), path, err)
		}
		out = append(out, s)
		tried = append(tried, path)
		return nil
	}
	if t.IdentityFile != "" {
		if err := load(t.IdentityFile, true); err != nil {
			return nil, nil, cleanup, err
		}
	} else {
		// IdentityFile lines of ~/.ssh/config: a missing file is skipped,
		// as ssh does.
		for _, p := range t.IdentityFiles {
			if err := load(p, false); err != nil {
				return nil, nil, cleanup, err
			}
		}
	}
	if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
		if c, err := net.Dial("unix", sock); err == nil {
			ag := agent.NewClient(c)
			if ss, err := ag.Signers(); err == nil && len(ss) > 0 {
				out = append(out, ss...)
				tried = append(tried, fmt.Sprintf("%d key(s) from ssh-agent", len(ss)))
			}
			cleanup = func() { c.Close() }
		}
	}
	if t.IdentityFile == "" && len(t.IdentityFiles) == 0 {
		if home, err := os.UserHomeDir(); err == nil {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				if err := load(home+"/.ssh/"+n, false); err != nil {
					return nil, nil, cleanup, err
				}
			}
		}
	}
	if len(out) == 0 {
		msg := "set identity_file in the host block or start ssh-agent"
		if len(t.IdentityFiles) > 0 {
			msg = fmt.Sprintf("the IdentityFile(s) of ~/.ssh/config (%s) are missing or need a passphrase; %s", strings.Join(t.IdentityFiles, ", "), msg)
		}
		return nil, nil, cleanup, fmt.Errorf("%s: no SSH key to offer: %s", t.what(), msg)
	}
	return out, tried, cleanup, nil
}

// hostKeyAlgorithms lists the key types known_hosts holds for the target,
// so the server offers a key we can check rather than one we do not have.
func hostKeyAlgorithms(cb ssh.HostKeyCallback, t Target) []string {
	// The callback reports the known keys for the host in its KeyError.
	addr := &net.TCPAddr{IP: net.ParseIP(t.Address), Port: t.Port}
	err := cb(t.hostport(), addr, dummyKey{})
	var ke *knownhosts.KeyError
	if !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	seen := map[string]bool{}
	for _, k := range ke.Want {
		typ := k.Key.Type()
		list := []string{typ}
		if typ == ssh.KeyAlgoRSA {
			list = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, a := range list {
			if !seen[a] {
				seen[a] = true
				algos = append(algos, a)
			}
		}
	}
	return algos
}

type dummyKey struct{}

func (dummyKey) Type() string                        { return "none" }
func (dummyKey) Marshal() []byte                     { return []byte("none") }
func (dummyKey) Verify([]byte, *ssh.Signature) error { return errors.New("dummy") }

// DialSSH opens the SSH connection, through the jump hosts when there are
// any. Closing the client closes the hops too.
func DialSSH(ctx context.Context, t Target) (*ssh.Client, error) {
	if len(t.Jumps) == 0 {
		conn, err := dialTCP(ctx, t)
		if err != nil {
			return nil, err
		}
		return handshake(ctx, t, conn, "")
	}
	var hops []*ssh.Client
	closeHops := func() {
		for i := len(hops) - 1; i >= 0; i-- {
			hops[i].Close()
		}
	}
	var conn net.Conn
	via := ""
	for i := 0; i <= len(t.Jumps); i++ {
		next := t
		if i < len(t.Jumps) {
			next = t.Jumps[i]
			next.label = fmt.Sprintf("host %s: jump host %s", t.Name, next.Name)
		}
		var err error
		if i == 0 {
			conn, err = dialTCP(ctx, next)
		} else {
			conn, err = dialVia(ctx, hops[i-1], next, via)
		}
		if err != nil {
			closeHops()
			return nil, err
		}
		c, err := handshake(ctx, next, conn, via)
		if err != nil {
			closeHops()
			return nil, err
		}
		if i == len(t.Jumps) {
			return c, nil
		}
		hops = append(hops, c)
		via = next.Name
	}
	panic("unreachable")
}

func dialTCP(ctx context.Context, t Target) (net.Conn, error) {
	d := net.Dialer{Timeout: 15 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.hostport())
	if err != nil {
		return nil, fmt.Errorf("%s: connect to %s: %w", t.what(), t.hostport(), err)
	}
	return conn, nil
}

// dialVia opens a TCP connection to t from the jump host hop.
func dialVia(ctx context.Context, hop *ssh.Client, t Target, via string) (net.Conn, error) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := hop.Dial("tcp", t.hostport())
		ch <- res{c, err}
	}()
	var r res
	select {
	case r = <-ch:
	case <-ctx.Done():
		hop.Close()
		r = <-ch
		if r.err == nil {
			r.c.Close()
		}
		r.err = ctx.Err()
	}
	if r.err != nil {
		return nil, fmt.Errorf("%s: connect to %s from jump host %s: %w", t.what(), t.hostport(), via, r.err)
	}
	return &jumpConn{Conn: r.c, hop: hop, raddr: tcpAddrOf(t)}, nil
}

// jumpConn is a forwarded connection through a jump host. Closing it
// closes the jump host's client (and, through it, earlier hops). Its
// remote address is the target's, not the channel's zero address.
type jumpConn struct {
	net.Conn
	hop   *ssh.Client
	raddr net.Addr
}

func (c *jumpConn) RemoteAddr() net.Addr { return c.raddr }

func (c *jumpConn) Close() error {
	err := c.Conn.Close()
	c.hop.Close()
	return err
}

// tcpAddrOf is the target's address and port; the IP is unset when the
// address is a name (resolved by the jump host).
func tcpAddrOf(t Target) *net.TCPAddr {
	return &net.TCPAddr{IP: net.ParseIP(t.Address), Port: t.Port}
}

// handshake runs the SSH handshake for t over conn. via names the jump
// host conn goes through ("" when direct).
func handshake(ctx context.Context, t Target, conn net.Conn, via string) (*ssh.Client, error) {
	fail := func(err error) (*ssh.Client, error) {
		conn.Close()
		return nil, err
	}
	if t.KnownHosts == "" {
		return fail(fmt.Errorf("%s: no known_hosts file; set known_hosts in the host block", t.what()))
	}
	cb, err := knownhosts.New(t.KnownHosts)
	if err != nil {
		return fail(fmt.Errorf("%s: read known_hosts %s: %w; create it with the host's key (ssh-keyscan), there is no insecure mode", t.what(), t.KnownHosts, err))
	}
	var hkErr *HostKeyError
	check := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			hkErr = &HostKeyError{Target: t, Changed: len(ke.Want) > 0, Key: key, Via: via}
			if len(ke.Want) > 0 {
				hkErr.Line = ke.Want[0].Line
			}
			return hkErr
		}
		return err
	}
	ss, tried, cleanup, err := signers(t)
	if err != nil {
		return fail(err)
	}
	defer cleanup()
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(ss...)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: hostKeyAlgorithms(cb, t),
		Timeout:           15 * time.Second,
	}
	// A forwarded connection has no deadlines: a timer bounds the
	// handshake instead.
	dl := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		dl = d
	}
	_ = conn.SetDeadline(dl)
	timer := time.AfterFunc(time.Until(dl), func() { conn.Close() })
	defer timer.Stop()
	// Abandon the handshake when the command gives up (the other host
	// failed, or ^C).
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, chans, reqs, err := ssh.NewClientConn(conn, t.hostport(), cfg)
	if err != nil {
		conn.Close()
		if hkErr != nil {
			return nil, hkErr
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, &AuthError{Target: t, Tried: tried, Err: err}
		}
		if via != "" {
			return nil, fmt.Errorf("%s: SSH handshake with %s through jump host %s: %w", t.what(), t.hostport(), via, err)
		}
		return nil, fmt.Errorf("%s: SSH handshake with %s: %w", t.what(), t.hostport(), err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
