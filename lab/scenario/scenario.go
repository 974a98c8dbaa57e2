// Package scenario drives migrate against a namespace lab: it builds the
// migrate binary, writes a plan file for the lab, starts the lab's servers
// and runs the CLI inside the admin namespace. The end-to-end tests and the
// demo share it, so the demo shows exactly what the tests prove.
package scenario

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/opsmigrate/migrate/lab"
)

// Ports used by the scenario.
const (
	MigratedPort = 8080 // moved to NEW
	StayPort     = 8081 // stays on OLD
	ClientPort   = 9000 // the client's own listener, for NEW's outbound test
)

// Scenario is a lab plus the binaries and files to drive it.
type Scenario struct {
	Lab        *lab.Lab
	MigrateBin string // path of the static migrate binary
	LabtoolBin string
	PlanFile   string
}

// BinDirEnv names a directory holding prebuilt `migrate` and `labtool`
// binaries. The VM lane sets it: compiling inside the emulated guest is
// many times slower than on the host.
const BinDirEnv = "MIGRATE_E2E_BINDIR"

var (
	binOnce                sync.Once
	binMigrate, binLabtool string
	binErr                 error
)

// Binaries returns the migrate and labtool binaries, built once per
// process into a temporary directory (or taken from $MIGRATE_E2E_BINDIR).
func Binaries() (migrate, labtool string, err error) {
	binOnce.Do(func() {
		if d := os.Getenv(BinDirEnv); d != "" {
			binMigrate, binLabtool = filepath.Join(d, "migrate"), filepath.Join(d, "labtool")
			for _, p := range []string{binMigrate, binLabtool} {
				if _, err := os.Stat(p); err != nil {
					binErr = fmt.Errorf("%s=%s: %w", BinDirEnv, d, err)
				}
			}
			return
		}
		d, err := os.MkdirTemp("", "migrate-e2e-bin-")
		if err != nil {
			binErr = err
			return
		}
		if binMigrate, binErr = BuildMigrate(d); binErr != nil {
			return
		}
		binLabtool, binErr = lab.BuildLabtool(d)
	})
	return binMigrate, binLabtool, binErr
}

// SlowEnv names a multiplier for the scenario's timeouts (the waits in Setup
// and StartServer, Migrate's per-command limit, Dial, Labtool), for slow
// hosts: the VM lane runs the tests under qemu without KVM, 15-50x slower
// than native. "3" triples them; unset, empty, unparsable or below 1 means 1.
// Tests can scale their own deadlines with Slow too.
const SlowEnv = "MIGRATE_E2E_SLOW"

// Slow returns d multiplied by $MIGRATE_E2E_SLOW (see SlowEnv).
func Slow(d time.Duration) time.Duration {
	f, err := strconv.ParseFloat(strings.TrimSpace(os.Getenv(SlowEnv)), 64)
	if err != nil || !(f > 1) || f > 1000 {
		return d
	}
	return time.Duration(float64(d) * f)
}

// CleanupBinaries removes the binaries Binaries built (not prebuilt ones).
func CleanupBinaries() {
	if os.Getenv(BinDirEnv) == "" && binMigrate != "" {
		os.RemoveAll(filepath.Dir(binMigrate))
	}
}

// BuildMigrate builds a static migrate binary into dir: the CLI uploads
// its own executable to the hosts as the agent, so it must not need libc.
func BuildMigrate(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "migrate")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/migrate")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build migrate: %w: %s", err, b)
	}
	return out, nil
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the migrate module")
	}
	return filepath.Dir(gomod), nil
}

// Setup builds the binaries into the lab's directory and starts the
// servers: on OLD "old" on 8080 and 8081, on NEW "new" on 0.0.0.0:8080
// (it serves the migrated address once that address is local on NEW), and
// on the client a listener on 9000.
func Setup(ctx context.Context, l *lab.Lab) (*Scenario, error) {
	s := &Scenario{Lab: l, PlanFile: filepath.Join(l.Dir, "migration.hcl")}
	var err error
	if s.MigrateBin, s.LabtoolBin, err = Binaries(); err != nil {
		return nil, err
	}
	servers := []struct {
		role, name, listen string
	}{
		// The address OLD holds: its private one behind the lab's NAT.
		{lab.RoleOld, "old", fmt.Sprintf("%s:%d", l.Held(lab.RoleOld), MigratedPort)},
		{lab.RoleOld, "old", fmt.Sprintf("%s:%d", l.Held(lab.RoleOld), StayPort)},
		{lab.RoleNew, "new", fmt.Sprintf(":%d", MigratedPort)}, // dual-stack wildcard
		{lab.RoleClient, "client", fmt.Sprintf("%s:%d", l.ClientIP, ClientPort)},
	}
	for _, sv := range servers {
		if _, err := l.Start(sv.role, s.LabtoolBin, "serve", "-name", sv.name, "-listen", sv.listen); err != nil {
			return nil, err
		}
	}
	for _, w := range []struct{ role, addr string }{
		{lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, MigratedPort)},
		{lab.RoleClient, fmt.Sprintf("%s:%d", l.OldIP, StayPort)},
		{lab.RoleNew, fmt.Sprintf("127.0.0.1:%d", MigratedPort)},
		{lab.RoleOld, fmt.Sprintf("%s:%d", l.ClientIP, ClientPort)},
	} {
		wctx, cancel := context.WithTimeout(ctx, Slow(10*time.Second))
		err := l.WaitTCP(wctx, w.role, w.addr)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// PlanOptions are the knobs of the lab plan file.
type PlanOptions struct {
	TunnelType string // vxlan | gre
	Stage      string // old | new
}

var planTmpl = template.Must(template.New("plan").Parse(`# migrate plan for the namespace lab: move {{.OldIP}}:8080 to NEW.
host "old" {
  ssh           = "root@{{.OldIP}}:22"
  identity_file = "{{.Identity}}"
  known_hosts   = "{{.KnownHosts}}"
}

host "new" {
  ssh           = "root@{{.NewIP}}:22"
  identity_file = "{{.Identity}}"
  known_hosts   = "{{.KnownHosts}}"
}

# OLD's endpoint is the migrated address itself: the realistic case.
tunnel {
  type         = "{{.Type}}"
  old_endpoint = "{{.OldIP}}"
  new_endpoint = "{{.NewIP}}"
}

service "web" {
  address  = "{{.OldIP}}"
  protocol = "tcp"
  ports    = [8080]
  stage    = "{{.Stage}}"
}
`))

// HCL renders a plan file for the lab with the given tunnel block body
// and service blocks.
func (s *Scenario) HCL(tunnel, services string) string {
	l := s.Lab
	return fmt.Sprintf(`host "old" {
  ssh           = "root@%s:22"
  identity_file = %q
  known_hosts   = %q
}

host "new" {
  ssh           = "root@%s:22"
  identity_file = %q
  known_hosts   = %q
}

tunnel {
%s
}

%s`, l.OldIP, l.IdentityFile, l.KnownHosts, l.NewIP, l.IdentityFile, l.KnownHosts, tunnel, services)
}

// Serve starts `labtool serve` in role's namespace and waits until it is
// reachable (TCP) or started (UDP).
func (s *Scenario) Serve(ctx context.Context, role, name, listen string, udp bool) error {
	args := []string{s.LabtoolBin, "serve", "-name", name, "-listen", listen}
	if udp {
		args = append(args, "-udp")
	}
	if _, err := s.Lab.Start(role, args...); err != nil {
		return err
	}
	if udp {
		time.Sleep(200 * time.Millisecond)
		return nil
	}
	addr := listen
	if strings.HasPrefix(addr, ":") {
		addr = "127.0.0.1" + addr
	} else if strings.HasPrefix(addr, "[::]:") {
		addr = "[::1]:" + strings.TrimPrefix(addr, "[::]:")
	}
	wctx, cancel := context.WithTimeout(ctx, Slow(10*time.Second))
	defer cancel()
	return s.Lab.WaitTCP(wctx, role, addr)
}

// LogText returns what a command started with Lab.Start wrote so far.
func (s *Scenario) LogText(cmd *exec.Cmd) string {
	b, _ := os.ReadFile(s.Lab.LogPath(cmd))
	return string(b)
}

// Labtool runs a labtool subcommand in role's namespace and returns its
// trimmed output.
func (s *Scenario) Labtool(ctx context.Context, timeout time.Duration, role string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Slow(timeout))
	defer cancel()
	out, err := s.Lab.Exec(ctx, role, append([]string{s.LabtoolBin}, args...)...)
	return strings.TrimSpace(string(out)), err
}

// PlanText renders the lab's plan file.
func (s *Scenario) PlanText(o PlanOptions) string {
	if o.TunnelType == "" {
		o.TunnelType = "vxlan"
	}
	if o.Stage == "" {
		o.Stage = "new"
	}
	var b bytes.Buffer
	_ = planTmpl.Execute(&b, map[string]any{
		"OldIP": s.Lab.OldIP, "NewIP": s.Lab.NewIP, "Identity": s.Lab.IdentityFile,
		"KnownHosts": s.Lab.KnownHosts, "Type": o.TunnelType, "Stage": o.Stage,
	})
	return b.String()
}

// WritePlan writes the plan file.
func (s *Scenario) WritePlan(o PlanOptions) error {
	return os.WriteFile(s.PlanFile, []byte(s.PlanText(o)), 0o644)
}

// Result is one CLI run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Migrate runs the CLI inside the admin namespace with a clean
// environment (no ssh-agent, HOME inside the lab).
func (s *Scenario) Migrate(ctx context.Context, args ...string) (Result, error) {
	return s.MigrateEnv(ctx, nil, args...)
}

// MigrateEnv is Migrate with extra environment variables (NAME=value).
func (s *Scenario) MigrateEnv(ctx context.Context, env []string, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, Slow(2*time.Minute))
	defer cancel()
	full := s.migrateArgs(env, args)
	cmd, err := s.Lab.Command(lab.RoleAdmin, full...)
	if err != nil {
		return Result{}, err
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 2 * time.Second
	runErr := cmd.Run()
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case runErr == nil:
	case errors.As(runErr, &ee):
		r.Code = ee.ExitCode()
	default:
		return r, runErr
	}
	if ctx.Err() != nil {
		return r, fmt.Errorf("migrate %s: %w", strings.Join(args, " "), ctx.Err())
	}
	return r, nil
}

// migrateArgs is the command line that runs the CLI with a clean
// environment (no ssh-agent, HOME inside the lab) plus env.
func (s *Scenario) migrateArgs(env, args []string) []string {
	full := append([]string{"env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + s.Lab.Dir, "NO_COLOR=1"}, env...)
	return append(append(full, s.MigrateBin), args...)
}

// StartMigrate runs the CLI in the background in the admin namespace; its
// output goes to the log file Lab.LogPath names.
func (s *Scenario) StartMigrate(env []string, args ...string) (*exec.Cmd, error) {
	return s.Lab.Start(lab.RoleAdmin, s.migrateArgs(env, args)...)
}

// Dial runs `labtool dial` from role and returns its output line.
func (s *Scenario) Dial(ctx context.Context, role string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, Slow(10*time.Second))
	defer cancel()
	out, err := s.Lab.Exec(ctx, role, append([]string{s.LabtoolBin, "dial", "-timeout", "3s"}, args...)...)
	return strings.TrimSpace(string(out)), err
}

// Sysctls are the sysctls migrate may touch in the lab, for snapshots.
func Sysctls() []string {
	return []string{
		"net.ipv4.ip_forward",
		"net.ipv4.ip_early_demux",
		"net.ipv4.conf.all.rp_filter",
		"net.ipv4.conf.default.rp_filter",
		"net.ipv4.conf.mig0.rp_filter",
		"net.ipv4.conf.mig0.accept_local",
		"net.ipv4.conf.all.forwarding",
		"net.ipv6.conf.all.forwarding",
		"net.ipv6.conf.default.forwarding",
		"net.ipv6.conf.eth0.forwarding",
		"net.ipv6.conf.eth0.accept_ra",
		"net.ipv6.conf.default.accept_ra",
		// A direct tunnel's, on the segment's interfaces (OLD's eth0,
		// NEW's eth1 in the lab's Segment variant).
		"net.ipv4.conf.eth0.rp_filter",
		"net.ipv4.conf.eth0.accept_local",
		"net.ipv4.conf.all.send_redirects",
		"net.ipv4.conf.eth0.send_redirects",
		"net.ipv4.conf.eth1.rp_filter",
		"net.ipv4.conf.eth1.arp_announce",
		"net.ipv4.conf.eth1.accept_local",
		"net.ipv6.conf.eth1.accept_ra",
	}
}

// Snapshot returns both hosts' snapshots.
func (s *Scenario) Snapshot(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	for _, r := range []string{lab.RoleOld, lab.RoleNew} {
		snap, err := s.Lab.Snapshot(ctx, r, Sysctls()...)
		if err != nil {
			return nil, err
		}
		out[r] = snap
	}
	return out, nil
}
