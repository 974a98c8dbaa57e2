package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/opsmigrate/migrate/agent/proto"
)

// testSSHServer is a minimal SSH server on loopback: public-key auth for
// one key, "direct-tcpip" forwarding (a jump host) and "exec" sessions
// that print "ok" (or, for a command containing "silent-agent", read and
// never answer). ended receives once per finished connection.
type testSSHServer struct {
	addr  *net.TCPAddr
	pub   ssh.PublicKey
	ended chan struct{}
}

func newTestSSHServer(t *testing.T, client ssh.PublicKey) *testSSHServer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hk, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
		if string(k.Marshal()) == string(client.Marshal()) {
			return nil, nil
		}
		return nil, fmt.Errorf("unknown key")
	}}
	cfg.AddHostKey(hk)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &testSSHServer{addr: ln.Addr().(*net.TCPAddr), pub: hk.PublicKey(), ended: make(chan struct{}, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c, cfg)
		}
	}()
	return s
}

func (s *testSSHServer) serve(c net.Conn, cfg *ssh.ServerConfig) {
	defer func() { s.ended <- struct{}{} }()
	sc, chans, reqs, err := ssh.NewServerConn(c, cfg)
	if err != nil {
		return
	}
	defer sc.Close()
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		switch nc.ChannelType() {
		case "direct-tcpip":
			var p struct {
				Host     string
				Port     uint32
				OrigHost string
				OrigPort uint32
			}
			if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
				nc.Reject(ssh.ConnectionFailed, err.Error())
				continue
			}
			out, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
			if err != nil {
				nc.Reject(ssh.ConnectionFailed, err.Error())
				continue
			}
			ch, creqs, err := nc.Accept()
			if err != nil {
				out.Close()
				continue
			}
			go ssh.DiscardRequests(creqs)
			go func() {
				var wg sync.WaitGroup
				wg.Add(2)
				go func() { io.Copy(out, ch); out.Close(); wg.Done() }()
				go func() { io.Copy(ch, out); ch.Close(); wg.Done() }()
				wg.Wait()
			}()
		case "session":
			ch, creqs, err := nc.Accept()
			if err != nil {
				continue
			}
			go func() {
				for r := range creqs {
					if r.Type != "exec" {
						r.Reply(false, nil)
						continue
					}
					r.Reply(true, nil)
					if strings.Contains(string(r.Payload), "old-agent") {
						// An agent of protocol 1 (hello_test.go):
						// answers one hello, then waits.
						go func() {
							var req proto.Request
							if proto.ReadFrame(ch, &req) == nil {
								b, _ := json.Marshal(proto.Hello{Version: 1, Hostname: "old", UID: 0, PID: 1})
								proto.WriteFrame(ch, proto.Response{ID: req.ID, Result: b})
							}
							io.Copy(io.Discard, ch)
						}()
						continue
					}
					if strings.Contains(string(r.Payload), "silent-agent") {
						// An agent that reads its requests and never
						// answers (link_test.go).
						go io.Copy(io.Discard, ch)
						continue
					}
					io.WriteString(ch, "ok\n")
					ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
					ch.Close()
				}
			}()
		default:
			nc.Reject(ssh.UnknownChannelType, "no")
		}
	}
}

func (s *testSSHServer) target(name, keyFile, kh string) Target {
	return Target{Name: name, User: "u", Address: "127.0.0.1", Port: s.addr.Port, IdentityFile: keyFile, KnownHosts: kh}
}

func (s *testSSHServer) waitEnded(t *testing.T, what string) {
	t.Helper()
	select {
	case <-s.ended:
	case <-time.After(5 * time.Second):
		t.Errorf("%s: connection still open", what)
	}
}

// TestProxyJumpTwoHops dials a target through two jump hosts, each
// verified against known_hosts; closing the client closes every hop, and
// an unknown key on the second hop is reported by name.
func TestProxyJumpTwoHops(t *testing.T) {
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
	j1 := newTestSSHServer(t, signer.PublicKey())
	j2 := newTestSSHServer(t, signer.PublicKey())
	dst := newTestSSHServer(t, signer.PublicKey())
	line := func(s *testSSHServer) string {
		return knownhosts.Line([]string{knownhosts.Normalize(s.addr.String())}, s.pub) + "\n"
	}
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(line(j1)+line(j2)+line(dst)), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := dst.target("old", keyFile, kh)
	tg.Jumps = []Target{j1.target("j1", keyFile, kh), j2.target("j2", keyFile, kh)}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := DialSSH(ctx, tg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RemoteAddr().String(); got != dst.addr.String() {
		t.Errorf("remote address %s, want the target's %s", got, dst.addr)
	}
	out, err := run(c, "true", nil)
	if err != nil || out != "ok\n" {
		t.Errorf("session through two hops: %q, %v", out, err)
	}
	c.Close()
	dst.waitEnded(t, "target")
	j2.waitEnded(t, "second hop")
	j1.waitEnded(t, "first hop")

	// The second hop's key is unknown: the error names it; the first hop
	// is closed again.
	kh2 := filepath.Join(dir, "known_hosts2")
	if err := os.WriteFile(kh2, []byte(line(j1)+line(dst)), 0o600); err != nil {
		t.Fatal(err)
	}
	tg.Jumps[1].KnownHosts = kh2
	_, err = DialSSH(ctx, tg)
	want := fmt.Sprintf("host old: jump host j2 (%s): unknown host key ssh-ed25519", j2.addr)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "e.g. on jump host j1") {
		t.Errorf("error %v, want %q", err, want)
	}
	j2.waitEnded(t, "second hop after the failure")
	j1.waitEnded(t, "first hop after the failure")
}
