package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/opsmigrate/migrate/agent/proto"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/state"
)

// Client is a running agent on one host.
type Client struct {
	Target Target
	Hello  proto.Hello
	// Uploaded is true when this connection installed the binary.
	Uploaded bool
	// Agent is the binary the host runs (see AgentFor).
	Agent *Binary
	// RemoteIP and RemotePort are the host's own address and port the
	// SSH connection reached: through a jump host or a forwarded port on
	// loopback, as sshd on the host saw them ($SSH_CONNECTION).
	RemoteIP   string
	RemotePort int

	ssh    *ssh.Client
	link   *link
	sess   *ssh.Session
	stdin  io.WriteCloser
	stdout io.Reader
	stderr *bytes.Buffer
	mu     sync.Mutex
	nextID uint64
}

// run executes a shell command in its own session on the connection.
func run(c *ssh.Client, cmd string, stdin io.Reader) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, stdin
	if err := s.Run(cmd); err != nil {
		return out.String(), fmt.Errorf("%q: %w: %s", cmd, err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// priv runs one program (argv, expanded by the login user's shell) as
// root: as it is for a root login, else through `sudo -n`. Never a shell
// as root: the narrow sudoers rule (SudoersRule) allows only the agent
// binaries, and `sudo sh` would be as good as ALL.
func (t Target) priv(argv string) string {
	if t.Sudo {
		return "sudo -n " + argv
	}
	return "exec " + argv
}

// DefaultStateDir is the agent's state directory on a host unless
// MIGRATE_STATE_DIR says otherwise (agent.StateDir).
const DefaultStateDir = "/var/lib/migrate"

// SudoersRule is the sudoers line that lets user run migrate's agents
// as root, and nothing else, for a host whose agent state directory is
// stateDir (DefaultStateDir): the agent binaries BinDir/migrate-<sha256>,
// with exactly the arguments the CLI passes (the agent refuses any other,
// see cmd/migrate agentCmd). It is safe only because that directory is
// root's with mode 0700, which every agent checks: nobody else can put a
// file there. README quotes it for DefaultStateDir; the sudo e2e test
// uses it as is.
func SudoersRule(user, stateDir string) string {
	return fmt.Sprintf("%s ALL=(root) NOPASSWD: %s/bin/migrate-* agent --sha256 *", user, stateDir)
}

// Connect dials the host, installs the agent when its hash is not there
// yet, starts it and exchanges hellos. bin is this process's own
// executable (SelfBinary), the fallback when the CLI carries no embedded
// agent for the host's architecture; it may be nil.
func Connect(ctx context.Context, t Target, bin *Binary) (*Client, error) {
	t0 := time.Now()
	sc, err := DialSSH(ctx, t)
	timing.CLI.Since("  connect "+t.Name+": SSH handshake", t0)
	if err != nil {
		return nil, err
	}
	c := &Client{Target: t, ssh: sc, RemotePort: t.Port, link: watchLink(sc, t.Name, t.Timeout)}
	if ra, ok := sc.RemoteAddr().(interface{ String() string }); ok {
		c.RemoteIP = hostOnly(ra.String())
	}
	stop := context.AfterFunc(ctx, func() { sc.Close() })
	if ip, perr := netip.ParseAddr(c.RemoteIP); len(t.Jumps) > 0 || perr == nil && ip.IsLoopback() {
		// Through a jump host, or a port forwarded to this machine's
		// loopback (ssh -L, a VM's port forward), the connection's remote
		// address is not the host's own; ask sshd which of its addresses
		// and ports it was reached on.
		if ip, port, err := serverAddr(sc); err == nil {
			c.RemoteIP, c.RemotePort = ip, port
		} else if c.RemoteIP == "" {
			err = fmt.Errorf("host %s: find the address the connection reached: %w", t.Name, err)
			stop()
			sc.Close()
			return nil, err
		}
	}
	if err == nil {
		err = c.start(ctx, bin)
		if err != nil && !t.Sudo && ctx.Err() == nil {
			// A non-root user without sudo fails somewhere in the agent's
			// installation; say why rather than how.
			if out, uerr := run(sc, "id -u", nil); uerr == nil && strings.TrimSpace(out) != "0" {
				err = fmt.Errorf("host %s: user %s is not root and the host block does not set sudo = true; migrate's agent needs root: set sudo = true (it runs sudo -n) or connect as root (%w)", t.Name, t.User, err)
			}
		}
	}
	stop()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		if dead := c.link.err(); dead != nil {
			// The keepalives gave up: that is the cause, whatever the
			// command in flight saw (EOF, a closed channel).
			err = fmt.Errorf("%w, while starting the agent", dead)
		}
		sc.Close()
		return nil, err
	}
	return c, nil
}

// serverAddr is the server address and port of $SSH_CONNECTION
// ("client_ip client_port server_ip server_port") in a session on c.
func serverAddr(c *ssh.Client) (string, int, error) {
	out, err := run(c, `echo "$SSH_CONNECTION"`, nil)
	if err != nil {
		return "", 0, err
	}
	f := strings.Fields(out)
	if len(f) != 4 {
		return "", 0, fmt.Errorf("unexpected SSH_CONNECTION %q", strings.TrimSpace(out))
	}
	port, err := strconv.Atoi(f[3])
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("unexpected SSH_CONNECTION %q", strings.TrimSpace(out))
	}
	return strings.Trim(f[2], "[]"), port, nil
}

// checkSudo makes sure sudo -n lets the user run the agent at path
// (`sudo -l` resolves it as root: the user cannot see into the state
// directory) before anything else runs through it, and turns sudo's own
// complaints into advice. have is false when the agent is not installed.
func checkSudo(c *ssh.Client, t Target, argv string) (have bool, err error) {
	s, err := c.NewSession()
	if err != nil {
		return false, fmt.Errorf("host %s: open session: %w", t.Name, err)
	}
	defer s.Close()
	var errb bytes.Buffer
	s.Stderr = &errb
	err = s.Run(`command -v sudo >/dev/null 2>&1 || { echo "migrate: sudo: not found" >&2; exit 127; }; sudo -n -l ` + argv + ` >/dev/null`)
	if err == nil {
		return true, nil
	}
	if strings.Contains(errb.String(), ": command not found") {
		return false, nil
	}
	return false, sudoError(t, errb.String(), err)
}

// sudoError explains why "sudo -n" failed for t, from sudo's stderr.
func sudoError(t Target, stderr string, err error) error {
	msg := strings.TrimSpace(stderr)
	low := strings.ToLower(msg)
	switch {
	case strings.Contains(low, "a password is required") || strings.Contains(low, "a terminal is required") ||
		strings.Contains(low, "askpass"):
		return fmt.Errorf("host %s: user %s needs a password for sudo; migrate runs sudo -n (no prompt). Allow NOPASSWD for %s in /etc/sudoers.d, for migrate's agents only (\"%s\", see README) or for ALL, or connect as root (sudo said: %s)",
			t.Name, t.User, t.User, SudoersRule(t.User, DefaultStateDir), msg)
	case strings.Contains(low, "sudo: not found") || strings.Contains(low, "sudo: command not found"):
		return fmt.Errorf("host %s: sudo = true, but sudo is not installed on the host; install it, or connect as root and drop sudo = true", t.Name)
	case strings.Contains(low, "not in the sudoers") || strings.Contains(low, "is not allowed to") || strings.Contains(low, "may not run sudo"):
		return fmt.Errorf("host %s: user %s may not use sudo; allow it with NOPASSWD in /etc/sudoers.d, or connect as root (sudo said: %s)", t.Name, t.User, msg)
	}
	if msg == "" {
		msg = err.Error()
	}
	return fmt.Errorf("host %s: sudo -n failed for user %s: %s; migrate needs passwordless sudo (sudo -n) for its agent or a root login", t.Name, t.User, msg)
}

func hostOnly(hp string) string {
	if i := strings.LastIndex(hp, ":"); i >= 0 {
		return strings.Trim(hp[:i], "[]")
	}
	return hp
}

func (c *Client) start(ctx context.Context, bin *Binary) error {
	t := c.Target
	var machine string
	if !t.Sudo && BeforeAgentStart == nil {
		started, m, err := c.startDirect(ctx, bin)
		if err != nil || started {
			return err
		}
		machine = m // not installed, or refused for its hash: the long way
	}
	t0 := time.Now()
	if machine == "" {
		out, err := run(c.ssh, "uname -m", nil)
		timing.CLI.Since("  connect "+t.Name+": uname -m", t0)
		t0 = time.Now()
		if err != nil {
			return fmt.Errorf("host %s: %w", t.Name, err)
		}
		machine = strings.TrimSpace(out)
	}
	agents, err := embeddedAgents()
	if err != nil {
		return err
	}
	bin, err = AgentFor(t.Name, machine, agents, bin)
	if err != nil {
		return err
	}
	hash, err := bin.Hash()
	if err != nil {
		return fmt.Errorf("host %s: %w", t.Name, err)
	}
	c.Agent = bin
	timing.CLI.Since("  connect "+t.Name+": pick and hash the agent binary (CLI)", t0)
	t0 = time.Now()
	// The install path holds the hash, so an existing copy is used only
	// when it is byte-identical: the agent checks its own sha256 against
	// the one it is given before it does anything (agent/selfcheck.go),
	// in the same exec that runs it. ${MIGRATE_STATE_DIR} is expanded by
	// the login user's shell.
	path := agentPath(hash)
	argv := path + " agent --sha256 " + hash
	key := agentKey(t, path)
	var have bool
	if t.Sudo {
		if have, err = checkSudo(c.ssh, t, argv); err != nil {
			return err
		}
	} else {
		check := fmt.Sprintf(`p=%s; if [ -x "$p" ] && [ "$(sha256sum < "$p" | cut -d' ' -f1)" = %s ]; then echo have; else echo need; fi`, path, hash)
		if checkedAgents.has(key) {
			// This process checked (or installed) that very file
			// moments ago (the confirmation's fresh connection after
			// an apply): hashing its megabytes again here only costs
			// time, and the agent checks its own hash as it starts.
			check = fmt.Sprintf(`p=%s; if [ -x "$p" ]; then echo have; else echo need; fi`, path)
		}
		out, err := run(c.ssh, check, nil)
		if err != nil {
			return fmt.Errorf("host %s: check installed agent: %w", t.Name, err)
		}
		have = strings.TrimSpace(out) == "have"
	}
	timing.CLI.Since("  connect "+t.Name+": check the installed agent (sha256sum on the host)", t0)
	t0 = time.Now()
	if !have {
		if err := c.install(bin, hash); err != nil {
			return err
		}
		c.Uploaded = true
	}
	if BeforeAgentStart != nil {
		BeforeAgentStart(t.Name)
	}
	if _, err := c.launch(ctx, t.priv(argv), false); err != nil {
		return err
	}
	timing.CLI.Since("  connect "+t.Name+": start the agent", t0)
	if err := c.hello(ctx); err != nil {
		if nerr := c.noexecStateDir(hash); nerr != nil {
			return nerr
		}
		return err
	}
	checkedAgents.add(key) // it ran: its own hash check passed
	return nil
}

// agentPath is the installed agent of that hash, for the login user's
// shell to expand.
func agentPath(hash string) string {
	return `"${MIGRATE_STATE_DIR:-` + DefaultStateDir + `}/bin/migrate-` + hash + `"`
}

func agentKey(t Target, path string) string {
	return t.User + "@" + t.Address + ":" + strconv.Itoa(t.Port) + " " + path
}

// startDirect is the short way for a root login (issue 18: every SSH exec
// is a round trip, and hashing the installed agent with sha256sum before
// it starts hashed it twice): one exec runs `uname -m`, picks the hash of
// the agent this CLI has for that machine, and execs the installed agent
// of that hash if there is one, which checks its own sha256 as it starts
// (agent/selfcheck.go), exactly as the long way's exec does. The first
// line of its output says which happened. started is false, with the
// machine, when the agent is not installed or refused to run because its
// file does not have that hash (a corrupted or half-written file): the
// long way then installs it, as it would have after its sha256sum.
func (c *Client) startDirect(ctx context.Context, self *Binary) (started bool, machine string, err error) {
	t := c.Target
	t0 := time.Now()
	agents, err := embeddedAgents()
	if err != nil {
		return false, "", err
	}
	var arms []string
	hashes := map[string]string{} // GOARCH -> hash
	for _, a := range []struct{ arch, pattern string }{{"amd64", "x86_64|amd64"}, {"arm64", "aarch64|arm64"}} {
		b, err := AgentFor(t.Name, a.arch, agents, self)
		if err != nil {
			continue // no agent for that machine: the long way says why
		}
		h, err := b.Hash()
		if err != nil {
			continue
		}
		hashes[a.arch] = h
		arms = append(arms, fmt.Sprintf("%s) h=%s ;;", a.pattern, h))
	}
	timing.CLI.Since("  connect "+t.Name+": pick and hash the agent binary (CLI)", t0)
	if len(arms) == 0 {
		return false, "", nil
	}
	t0 = time.Now()
	script := `m=$(uname -m); h=; case "$m" in ` + strings.Join(arms, " ") + ` esac; ` +
		`p="${MIGRATE_STATE_DIR:-` + DefaultStateDir + `}/bin/migrate-$h"; ` +
		`if [ -n "$h" ] && [ -x "$p" ]; then echo "migrate-agent start $m"; exec "$p" agent --sha256 "$h"; fi; ` +
		`echo "migrate-agent need $m"`
	line, err := c.launch(ctx, script, true)
	if err != nil {
		return false, "", err
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "migrate-agent" || f[1] != "start" && f[1] != "need" {
		return false, "", fmt.Errorf("host %s: start agent: unexpected output %q", t.Name, line)
	}
	machine = f[2]
	timing.CLI.Since("  connect "+t.Name+": uname -m, start the installed agent (one exec)", t0)
	if f[1] == "need" {
		return false, machine, nil
	}
	arch, err := unameToGOARCH(machine)
	if err != nil {
		return false, "", fmt.Errorf("host %s: %w", t.Name, err)
	}
	c.Agent, err = AgentFor(t.Name, machine, agents, self)
	if err != nil {
		return false, "", err
	}
	if err := c.hello(ctx); err != nil {
		if strings.Contains(c.agentRefusal(), " has sha256 ") {
			c.sess.Close()
			c.sess, c.stdin, c.stdout = nil, nil, nil
			return false, machine, nil
		}
		if nerr := c.noexecStateDir(hashes[arch]); nerr != nil {
			return false, "", nerr
		}
		return false, "", err
	}
	checkedAgents.add(agentKey(t, agentPath(hashes[arch])))
	return true, machine, nil
}

// launch starts cmd in a session that stays open as the agent's pipe. With
// header, the command first prints one line, returned here; when that
// line is not a start, the session is waited for and not kept.
func (c *Client) launch(ctx context.Context, cmd string, header bool) (string, error) {
	t := c.Target
	s, err := c.ssh.NewSession()
	if err != nil {
		return "", fmt.Errorf("host %s: open agent session: %w", t.Name, err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		return "", err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return "", err
	}
	c.stderr = &bytes.Buffer{}
	s.Stderr = &syncWriter{w: c.stderr}
	if err := s.Start(cmd); err != nil {
		return "", fmt.Errorf("host %s: start agent: %w", t.Name, err)
	}
	c.sess, c.stdin, c.stdout = s, stdin, stdout
	if !header {
		return "", nil
	}
	// One short line, read byte by byte so that nothing of the agent's
	// first frame is read ahead; bounded like an agent call.
	type res struct {
		line string
		err  error
	}
	got := make(chan res, 1)
	go func() {
		var b []byte
		one := make([]byte, 1)
		for len(b) < 256 {
			if _, err := io.ReadFull(stdout, one); err != nil {
				got <- res{string(b), err}
				return
			}
			if one[0] == '\n' {
				got <- res{string(b), nil}
				return
			}
			b = append(b, one[0])
		}
		got <- res{string(b), errors.New("line too long")}
	}()
	var r res
	select {
	case r = <-got:
	case <-time.After(c.timeout()):
		s.Close()
		return "", fmt.Errorf("host %s: start agent: no answer within %s", t.Name, c.timeout())
	case <-ctx.Done():
		s.Close()
		return "", ctx.Err()
	}
	if r.err != nil {
		s.Close()
		return "", fmt.Errorf("host %s: start agent: %w (read %q)%s", t.Name, r.err, r.line, c.stderrTail())
	}
	if !strings.HasPrefix(r.line, "migrate-agent start ") {
		_ = s.Wait()
		s.Close()
		c.sess, c.stdin, c.stdout = nil, nil, nil
	}
	return r.line, nil
}

// hello exchanges hellos with the agent just launched and checks it.
func (c *Client) hello(ctx context.Context) error {
	t := c.Target
	s := c.sess
	var h proto.Hello
	if err := c.call(ctx, proto.MethodHello, nil, &h); err != nil {
		// An agent that refused exits at once: let its stderr arrive.
		done := make(chan struct{})
		go func() { s.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
		}
		if msg := c.agentRefusal(); msg != "" {
			return fmt.Errorf("host %s: the agent refused to start: %s", t.Name, msg)
		}
		return fmt.Errorf("host %s: agent did not answer: %w", t.Name, err)
	}
	if err := checkHello(t.Name, h); err != nil {
		return err
	}
	c.Hello = h
	return nil
}

// checkHello checks the agent's greeting: the protocol this CLI speaks,
// and root. The agent that answers is the one this CLI carries (its
// install path holds its hash), so another protocol means something else
// answered: a stale copy, or an agent started by hand.
func checkHello(host string, h proto.Hello) error {
	if h.Version != proto.Version {
		return fmt.Errorf("host %s: agent speaks protocol %d, CLI %d: the agent on the host is not the one this migrate carries; run the same migrate build on both sides", host, h.Version, proto.Version)
	}
	if h.UID != 0 {
		return fmt.Errorf("host %s: agent runs as uid %d; it needs root: connect as root or set sudo = true", host, h.UID)
	}
	return nil
}

// agentRefusal is the agent's own reason when it exited before its hello
// because its binary or its state directory failed a check.
func (c *Client) agentRefusal() string {
	if c.stderr == nil {
		return ""
	}
	sw := c.sess.Stderr.(*syncWriter)
	sw.mu.Lock()
	msg := strings.TrimSpace(c.stderr.String())
	sw.mu.Unlock()
	for _, sig := range []string{"refusing to run", "state directory", "is a symbolic link"} {
		if strings.Contains(msg, sig) {
			return strings.TrimPrefix(msg, "Error: ")
		}
	}
	return ""
}

// BeforeAgentStart, when set, is called after the agent was checked or
// installed on host and before it is started (test-only fault injection:
// the agent swapped in between must be refused).
var BeforeAgentStart func(host string)

// install uploads the agent binary as the login user into a directory of
// its own (mktemp -d in the first of $TMPDIR, /tmp, /var/tmp, /dev/shm,
// $HOME where a file executes: installScript) and runs it, as root, as
// `agent-install --sha256 HASH`: the binary checks its own sha256 and
// copies itself into the root-owned agent directory (agent.InstallSelf).
// No shell runs as root. Through sudo this needs the right to run the
// uploaded file as root, which the narrow sudoers rule does not give: the
// user then gets the commands an administrator runs.
func (c *Client) install(bin *Binary, hash string) error {
	t := c.Target
	data, err := bin.Data()
	if err != nil {
		return fmt.Errorf("host %s: %w", t.Name, err)
	}
	sudo := ""
	if t.Sudo {
		sudo = "sudo -n "
	}
	s, err := c.ssh.NewSession()
	if err != nil {
		return fmt.Errorf("host %s: open session: %w", t.Name, err)
	}
	defer s.Close()
	var out, errb bytes.Buffer
	s.Stdout, s.Stderr, s.Stdin = &out, &errb, bytes.NewReader(data)
	if err := s.Run(installScript(hash, sudo)); err != nil {
		msg := strings.TrimSpace(errb.String())
		byHand := fmt.Sprintf("write it with `migrate agent-binary linux/%s -o FILE` (a release build; a dev build is the linux migrate itself), copy FILE to the host and run `FILE agent-install --sha256 %s` there as root", bin.Arch, hash)
		var exit *ssh.ExitError
		if errors.As(err, &exit) && exit.ExitStatus() == noexecExit {
			return uploadDirError(t.Name, t.User, out.String(), "install the agent as root by hand: "+byHand+", from a directory that allows exec")
		}
		if t.Sudo && strings.Contains(strings.ToLower(msg), "a password is required") {
			return fmt.Errorf("host %s: migrate's agent %s (sha256 %s) is not installed on the host, and user %s may not install it: its sudo rule allows only migrate's installed agents (sudo said: %s). As root on the host, install it: %s",
				t.Name, bin, hash, t.User, msg, byHand)
		}
		return fmt.Errorf("host %s: install agent: %w: %s", t.Name, err, msg)
	}
	return nil
}

// noexecStateDir is the clear error when the agent could not be executed
// because the state directory is on a noexec mount, else nil. It runs one
// more SSH command, only after such a failure.
func (c *Client) noexecStateDir(hash string) error {
	if c.stderr == nil || c.sess == nil {
		return nil
	}
	sw, ok := c.sess.Stderr.(*syncWriter)
	if !ok {
		return nil
	}
	sw.mu.Lock()
	stderr := c.stderr.String()
	sw.mu.Unlock()
	if !execDenied(stderr) {
		return nil
	}
	out, err := run(c.ssh, stateDirScript, nil)
	if err != nil {
		return nil
	}
	dir, m, noexec := stateDirNoexec(out)
	if !noexec {
		return nil
	}
	return fmt.Errorf("host %s: the agent's state directory %s is on a file system mounted noexec (mount point %s, options %s), and the agent runs from there (%s/bin/migrate-%s): remount that file system with exec (and drop noexec from its line in /etc/fstab), or set MIGRATE_STATE_DIR for the SSH session to a root-owned directory of mode 0700 on a file system that allows exec (through sudo, sudoers must keep it, see README: Defaults env_keep += \"MIGRATE_STATE_DIR\", and the sudo rule must name that directory)",
		c.Target.Name, dir, m.Point, m.Options, dir, hash)
}

// checkedAgents are the installed agents (target and path) this process
// has checked or installed.
var checkedAgents = &stringSet{m: map[string]bool{}}

type stringSet struct {
	mu sync.Mutex
	m  map[string]bool
}

func (s *stringSet) has(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

func (s *stringSet) add(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = true
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// call sends one request and waits for its response. Calls are serialised.
func (c *Client) call(ctx context.Context, method string, params, result any) error {
	return c.callWithin(ctx, 0, method, params, result)
}

// callWithin is call for a request that may itself take up to work on the
// host (a ping's replies, a probe's connect): the agent must answer
// within the host timeout plus work, or the call fails with a
// DeadLinkError and the connection is closed.
func (c *Client) callWithin(ctx context.Context, work time.Duration, method string, params, result any) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.link != nil {
		if dead := c.link.err(); dead != nil {
			return dead
		}
	}
	c.nextID++
	req := proto.Request{ID: c.nextID, Method: method, Timings: timing.CLI != nil}
	if timing.CLI != nil {
		defer timing.CLI.Since("agent call "+method+" ("+c.Target.Name+", round trip)", time.Now())
	}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return err
		}
		req.Params = b
	}
	done := make(chan error, 1)
	var resp proto.Response
	go func() {
		if err := proto.WriteFrame(c.stdin, req); err != nil {
			done <- err
			return
		}
		done <- proto.ReadFrame(c.stdout, &resp)
	}()
	limit := c.timeout() + work
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case err := <-done:
		if err != nil {
			if c.link != nil {
				if dead := c.link.err(); dead != nil {
					return dead
				}
			}
			return fmt.Errorf("agent connection: %w%s", err, c.stderrTail())
		}
	case <-timer.C:
		// No answer: the host is silent, or only its agent is. Either
		// way this connection is given up, so that nothing else waits
		// on it.
		dead := &DeadLinkError{Host: c.Target.Name, After: limit, Method: method}
		if c.link == nil {
			c.ssh.Close()
			return dead
		}
		if c.link.silence() < c.timeout() {
			dead.AgentOnly = true
		} else {
			dead.After = c.timeout()
		}
		return c.link.kill(dead)
	case <-ctx.Done():
		// The session is no longer usable: the response may still come.
		c.ssh.Close()
		return ctx.Err()
	}
	if resp.ID != req.ID {
		if resp.ID == 0 && resp.Error != nil {
			// The agent could not read the request at all.
			return fmt.Errorf("agent refused request %d: %w", req.ID, resp.Error)
		}
		return fmt.Errorf("agent answered request %d with %d", req.ID, resp.ID)
	}
	timing.CLI.Merge("  agent "+c.Target.Name+": ", resp.Timings)
	if resp.Error != nil {
		return resp.Error
	}
	if result != nil {
		return json.Unmarshal(resp.Result, result)
	}
	return nil
}

// timeout is how long the host may stay silent.
func (c *Client) timeout() time.Duration {
	if c.Target.Timeout > 0 {
		return c.Target.Timeout
	}
	return DefaultTimeout
}

// Err is the DeadLinkError that made this client give up on its host,
// or nil while the connection is alive.
func (c *Client) Err() error {
	if c.link == nil {
		return nil
	}
	return c.link.err()
}

func (c *Client) stderrTail() string {
	if c.stderr == nil {
		return ""
	}
	s := strings.TrimSpace(c.stderr.String())
	if s == "" {
		return ""
	}
	if len(s) > 500 {
		s = s[len(s)-500:]
	}
	return " (agent stderr: " + s + ")"
}

// Facts collects the host's facts.
func (c *Client) Facts(ctx context.Context, req state.FactsRequest) (state.Facts, error) {
	var f state.Facts
	// A busy host's conntrack table takes a while to read: the
	// keepalives still catch a silent host within the timeout.
	err := c.callWithin(ctx, c.timeout(), proto.MethodFacts, req, &f)
	// Process names are chosen by the host's users and reach the
	// terminal and init's plan file: printable only, whatever the agent
	// sent.
	for i := range f.Listeners {
		f.Listeners[i].Process = state.Printable(f.Listeners[i].Process)
	}
	return f, err
}

// Apply applies one step on the host, which records it in its journal.
func (c *Client) Apply(ctx context.Context, s state.Step, rec state.Record) error {
	return c.call(ctx, proto.MethodApply, proto.ApplyParams{Step: s, Run: rec.Run, Seq: rec.Seq, Undo: rec.Undo}, nil)
}

// Journal returns the host's own journal, read page by page: no frame
// limit stands between a rollback and a large journal.
func (c *Client) Journal(ctx context.Context) (*state.Journal, error) {
	return proto.FetchJournal(func(p proto.JournalPageParams, pg *proto.JournalPage) error {
		return c.call(ctx, proto.MethodJournalPage, p, pg)
	})
}

// Prune drops entries from the host journal and returns those it dropped.
func (c *Client) Prune(ctx context.Context, ids []state.EntryID) ([]state.EntryID, error) {
	var r proto.PruneResult
	if err := c.call(ctx, proto.MethodPrune, proto.PruneParams{Entries: ids}, &r); err != nil {
		return nil, err
	}
	return r.Dropped, nil
}

// Lock takes the host lock for this session.
func (c *Client) Lock(ctx context.Context, info proto.LockInfo) error {
	return c.call(ctx, proto.MethodLock, info, nil)
}

// ForceUnlock ends the session holding lock id on the host.
func (c *Client) ForceUnlock(ctx context.Context, id string) error {
	return c.call(ctx, proto.MethodForceUnlock, proto.ForceUnlockParams{ID: id}, nil)
}

// Arm starts the host's revert timer for run: timeout from now, on the
// host's own monotonic clock.
func (c *Client) Arm(ctx context.Context, run string, timeout time.Duration) error {
	return c.call(ctx, proto.MethodArm, proto.ArmParams{Run: run, TimeoutMS: timeout.Milliseconds()}, nil)
}

// Prepare is the first phase of a two-host confirm: the run's deadline on
// the host becomes grace from now.
func (c *Client) Prepare(ctx context.Context, run string, grace time.Duration) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := c.call(ctx, proto.MethodPrepare, proto.PrepareParams{Run: run, GraceMS: grace.Milliseconds()}, &st)
	return st, err
}

// Confirm keeps run on the host, unless its revert timer decided first;
// nil means the host recorded "confirmed".
func (c *Client) Confirm(ctx context.Context, run string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := c.call(ctx, proto.MethodConfirm, proto.ConfirmParams{Run: run}, &st)
	return st, err
}

// Abort makes the host revert run now.
func (c *Client) Abort(ctx context.Context, run string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := c.call(ctx, proto.MethodAbort, proto.ConfirmParams{Run: run}, &st)
	return st, err
}

// RunStatus is what the host decided for run.
func (c *Client) RunStatus(ctx context.Context, run string) (proto.RunStatus, error) {
	var st proto.RunStatus
	err := c.call(ctx, proto.MethodRunStatus, proto.ConfirmParams{Run: run}, &st)
	return st, err
}

// Ping asks the host to ping addr.
func (c *Client) Ping(ctx context.Context, addr string) error {
	_, err := c.PingRTT(ctx, addr, 5, 5*time.Second)
	return err
}

// PingSize pings addr from the host with unfragmented packets of size
// bytes.
func (c *Client) PingSize(ctx context.Context, addr string, size, count int, timeout time.Duration) error {
	return c.callWithin(ctx, time.Duration(max(count, 1))*timeout, proto.MethodPing, proto.PingParams{Addr: addr, Count: count, TimeoutMS: int(timeout.Milliseconds()), Size: size}, nil)
}

// PingRTT pings addr from the host and returns the first reply's
// round-trip time.
func (c *Client) PingRTT(ctx context.Context, addr string, count int, timeout time.Duration) (time.Duration, error) {
	var r proto.PingResult
	err := c.callWithin(ctx, time.Duration(max(count, 1))*timeout, proto.MethodPing, proto.PingParams{Addr: addr, Count: count, TimeoutMS: int(timeout.Milliseconds())}, &r)
	return time.Duration(r.RTTMicros) * time.Microsecond, err
}

// Probe opens a marked TCP connection from the host to addr:port.
func (c *Client) Probe(ctx context.Context, addr string, port uint16, mark uint32) error {
	return c.callWithin(ctx, 5*time.Second, proto.MethodProbe, proto.ProbeParams{Addr: addr, Port: port, Mark: mark, TimeoutMS: 5000}, nil)
}

// RouteGet returns the source address the host uses towards addr.
func (c *Client) RouteGet(ctx context.Context, addr string) (proto.RouteGetResult, error) {
	var r proto.RouteGetResult
	err := c.call(ctx, proto.MethodRouteGet, proto.RouteGetParams{Addr: addr}, &r)
	return r, err
}

// RouteGetNeigh is RouteGet, and, when addr is on a link of the host,
// the neighbour entry for it after the agent probed it (one UDP
// datagram): whether the peer answers on that link.
func (c *Client) RouteGetNeigh(ctx context.Context, addr string) (proto.RouteGetResult, error) {
	var r proto.RouteGetResult
	err := c.call(ctx, proto.MethodRouteGet, proto.RouteGetParams{Addr: addr, Neigh: true}, &r)
	return r, err
}

// DropConnection closes the SSH connection abruptly (fault injection).
// WGKey returns the host's WireGuard public key for tunnel name; the
// agent makes the key pair on first use and keeps the private key.
func (c *Client) WGKey(ctx context.Context, name string) (string, error) {
	var r proto.WGKeyResult
	err := c.call(ctx, proto.MethodWGKey, proto.WGKeyParams{Name: name}, &r)
	return r.PublicKey, err
}

func (c *Client) DropConnection() { c.ssh.Close() }

// KillAgent kills the agent process on the host with SIGKILL, over a new
// session of the same connection (fault injection).
func (c *Client) KillAgent() error {
	if c.Hello.PID <= 0 {
		return fmt.Errorf("agent pid unknown")
	}
	// Through sudo this needs a rule for kill (test-only: the narrow
	// agent rule does not give it).
	_, err := run(c.ssh, c.Target.priv(fmt.Sprintf("kill -9 %d", c.Hello.PID)), nil)
	return err
}

// Close stops the agent and the connection.
func (c *Client) Close() error {
	if c.stdin != nil {
		c.stdin.Close()
	}
	if c.sess != nil {
		done := make(chan struct{})
		go func() { c.sess.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
		}
	}
	return c.ssh.Close()
}
