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
}

func (t Target) hostport() string { return net.JoinHostPort(t.Address, strconv.Itoa(t.Port)) }

// HostKeyError is an unknown or changed host key.
type HostKeyError struct {
	Target  Target
	Changed bool
	Key     ssh.PublicKey
	Line    int
}

func (e *HostKeyError) Error() string {
	fp := ssh.FingerprintSHA256(e.Key)
	if e.Changed {
		return fmt.Sprintf("host %s (%s): HOST KEY CHANGED: the server presented %s %s, which does not match line %d of %s. This may be an attack, or the host was reinstalled. If you know why, remove the old key with `ssh-keygen -f %s -R %s` and add the new one",
			e.Target.Name, e.Target.hostport(), e.Key.Type(), fp, e.Line, e.Target.KnownHosts, e.Target.KnownHosts, knownhosts.Normalize(e.Target.hostport()))
	}
	return fmt.Sprintf("host %s (%s): unknown host key %s %s: it is not in %s. Check the fingerprint out of band, then add it, e.g. `ssh-keyscan -p %d %s >> %s`",
		e.Target.Name, e.Target.hostport(), e.Key.Type(), fp, e.Target.KnownHosts, e.Target.Port, e.Target.Address, e.Target.KnownHosts)
}

// AuthError is a failed SSH authentication.
type AuthError struct {
	Target Target
	Tried  []string
	Err    error
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("host %s: SSH authentication as %q at %s failed (tried: %s): %v. Check that the key is in ~%s/.ssh/authorized_keys on the host, or set identity_file in the host block",
		e.Target.Name, e.Target.User, e.Target.hostport(), strings.Join(e.Tried, ", "), e.Err, e.Target.User)
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
				return fmt.Errorf("host %s: read identity_file %s: %w", t.Name, path, err)
			}
			return nil
		}
		s, err := ssh.ParsePrivateKey(b)
		if err != nil {
			var pp *ssh.PassphraseMissingError
			if errors.As(err, &pp) {
				if must {
					return fmt.Errorf("host %s: identity_file %s is protected by a passphrase; load it into ssh-agent (ssh-add %s) and leave identity_file unset", t.Name, path, path)
				}
				return nil
			}
			return fmt.Errorf("host %s: identity_file %s: %w", t.Name, path, err)
		}
		out = append(out, s)
		tried = append(tried, path)
		return nil
	}
	if t.IdentityFile != "" {
		if err := load(t.IdentityFile, true); err != nil {
			return nil, nil, cleanup, err
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
	if t.IdentityFile == "" {
		if home, err := os.UserHomeDir(); err == nil {
			for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
				if err := load(home+"/.ssh/"+n, false); err != nil {
					return nil, nil, cleanup, err
				}
			}
		}
	}
	if len(out) == 0 {
		return nil, nil, cleanup, fmt.Errorf("host %s: no SSH key to offer: set identity_file in the host block or start ssh-agent", t.Name)
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

// DialSSH opens the SSH connection.
func DialSSH(ctx context.Context, t Target) (*ssh.Client, error) {
	if t.KnownHosts == "" {
		return nil, fmt.Errorf("host %s: no known_hosts file; set known_hosts in the host block", t.Name)
	}
	cb, err := knownhosts.New(t.KnownHosts)
	if err != nil {
		return nil, fmt.Errorf("host %s: read known_hosts %s: %w; create it with the host's key (ssh-keyscan), there is no insecure mode", t.Name, t.KnownHosts, err)
	}
	var hkErr *HostKeyError
	check := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		err := cb(hostname, remote, key)
		var ke *knownhosts.KeyError
		if errors.As(err, &ke) {
			hkErr = &HostKeyError{Target: t, Changed: len(ke.Want) > 0, Key: key}
			if len(ke.Want) > 0 {
				hkErr.Line = ke.Want[0].Line
			}
			return hkErr
		}
		return err
	}
	ss, tried, cleanup, err := signers(t)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	cfg := &ssh.ClientConfig{
		User:              t.User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(ss...)},
		HostKeyCallback:   check,
		HostKeyAlgorithms: hostKeyAlgorithms(cb, t),
		Timeout:           15 * time.Second,
	}
	d := net.Dialer{Timeout: 15 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.hostport())
	if err != nil {
		return nil, fmt.Errorf("host %s: connect to %s: %w", t.Name, t.hostport(), err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	} else {
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	}
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
		return nil, fmt.Errorf("host %s: SSH handshake with %s: %w", t.Name, t.hostport(), err)
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(c, chans, reqs), nil
}
