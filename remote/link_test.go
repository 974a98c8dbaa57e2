package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/opsmigrate/migrate/agent/proto"
)

// holeProxy forwards TCP to an SSH server until hole is set; from then on
// it swallows every byte in both directions without closing anything: a
// black-holed host, as a silent firewall drop or a dead link looks from
// the client (no RST, no FIN).
type holeProxy struct {
	addr *net.TCPAddr
	hole atomic.Bool
}

func newHoleProxy(t *testing.T, to *net.TCPAddr) *holeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &holeProxy{addr: ln.Addr().(*net.TCPAddr)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", to.String())
			if err != nil {
				c.Close()
				continue
			}
			t.Cleanup(func() { c.Close(); s.Close() })
			go p.pipe(s, c)
			go p.pipe(c, s)
		}
	}()
	return p
}

func (p *holeProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		if p.hole.Load() {
			continue
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

// dialThroughHole starts a test SSH server behind a holeProxy and
// connects to it.
func dialThroughHole(t *testing.T) (*ssh.Client, *holeProxy) {
	t.Helper()
	t.Setenv("SSH_AUTH_SOCK", "")
	t.Setenv("HOME", t.TempDir())
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "id")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	srv := newTestSSHServer(t, signer.PublicKey())
	px := newHoleProxy(t, srv.addr)
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(knownhosts.Line([]string{knownhosts.Normalize(px.addr.String())}, srv.pub)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := Target{Name: "old", User: "u", Address: "127.0.0.1", Port: px.addr.Port, IdentityFile: keyFile, KnownHosts: kh}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := DialSSH(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, px
}

// TestKeepaliveGivesUpOnSilentHost: keepalives keep a quiet but live
// connection up; once the host goes silent, whatever waits on the
// connection (here a command in a new session, between agent calls)
// fails within the timeout with a DeadLinkError, instead of waiting for
// TCP to give up.
func TestKeepaliveGivesUpOnSilentHost(t *testing.T) {
	c, px := dialThroughHole(t)
	const timeout = 1500 * time.Millisecond
	l := watchLink(c, "old", timeout)
	// Idle for twice the timeout: the host answers keepalives.
	time.Sleep(2 * timeout)
	if err := l.err(); err != nil {
		t.Fatalf("link given up while the host answers: %v", err)
	}
	if out, err := run(c, "true", nil); err != nil || out != "ok\n" {
		t.Fatalf("session on a live link: %q, %v", out, err)
	}
	px.hole.Store(true)
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := run(c, "true", nil); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a session succeeded through the black hole")
		}
	case <-time.After(3 * timeout):
		t.Fatalf("a session on a silent host still waits after %s (timeout %s): no keepalive gave up", 3*timeout, timeout)
	}
	took := time.Since(start)
	var dead *DeadLinkError
	if err := l.err(); !errors.As(err, &dead) || dead.Host != "old" || dead.AgentOnly {
		t.Fatalf("link error %v, want a DeadLinkError for host old", err)
	}
	if want := "host old stopped answering (no reply for 1.5s)"; dead.Error() != want {
		t.Errorf("error %q, want %q", dead.Error(), want)
	}
	t.Logf("gave up %s after the host went silent (timeout %s)", took.Round(time.Millisecond), timeout)
}

// startSilentAgent is a Client whose agent reads requests and never
// answers, on a connection whose sshd still answers keepalives.
func startSilentAgent(t *testing.T, c *ssh.Client, timeout time.Duration) *Client {
	t.Helper()
	cl := &Client{Target: Target{Name: "new", Timeout: timeout}, ssh: c, link: watchLink(c, "new", timeout)}
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if cl.stdin, err = s.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if cl.stdout, err = s.StdoutPipe(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("silent-agent"); err != nil {
		t.Fatal(err)
	}
	cl.sess = s
	return cl
}

// TestCallDeadline: an agent call gets no answer. With the host's sshd
// still answering keepalives, the call fails after the timeout and says
// it was the agent; with the host silent, it says the host stopped
// answering. Either way the connection is closed and the next call fails
// at once with the same error.
func TestCallDeadline(t *testing.T) {
	const timeout = 1500 * time.Millisecond
	for _, silentHost := range []bool{false, true} {
		t.Run("silent host "+strconv.FormatBool(silentHost), func(t *testing.T) {
			c, px := dialThroughHole(t)
			cl := startSilentAgent(t, c, timeout)
			if silentHost {
				px.hole.Store(true)
			}
			start := time.Now()
			done := make(chan error, 1)
			go func() { done <- cl.call(context.Background(), proto.MethodHello, nil, nil) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(3 * timeout):
				t.Fatalf("call to a silent agent still waits after %s (timeout %s)", 3*timeout, timeout)
			}
			took := time.Since(start)
			var dead *DeadLinkError
			if !errors.As(err, &dead) || dead.AgentOnly == silentHost {
				t.Fatalf("error %v (%T), want a DeadLinkError with AgentOnly=%v", err, err, !silentHost)
			}
			if took < timeout-200*time.Millisecond {
				t.Errorf("gave up after %s, before the %s timeout", took, timeout)
			}
			t.Logf("%v after %s", err, took.Round(time.Millisecond))
			start = time.Now()
			if err2 := cl.call(context.Background(), proto.MethodHello, nil, nil); err2 == nil || err2.Error() != err.Error() || time.Since(start) > 100*time.Millisecond {
				t.Errorf("next call: %v after %s, want the same error at once", err2, time.Since(start))
			}
		})
	}
}
