package config

import (
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/opsmigrate/migrate/state"
)

// Config is a parsed and validated plan file.
type Config struct {
	Path  string
	Hosts map[string]*Host // exactly "old" and "new"
	// Tunnel is nil when the plan has no tunnel block. That is valid only
	// when there are no services: forwards do not use the tunnel.
	Tunnel   *Tunnel
	Services []*Service // in file order
	Forwards []*Forward // in file order; nil when there are none
	// Warnings are true statements about the file's surroundings that do
	// not stop it, e.g. ssh_config Match blocks migrate does not evaluate.
	Warnings []string
}

// Host is a host block: how migrate reaches OLD or NEW over SSH.
type Host struct {
	Name         string // "old" | "new"
	User         string // from ssh = "user@host[:port]"
	Address      string // host part without brackets: IP address or DNS name
	Port         int    // default 22
	IdentityFile string // optional, "~/" expanded to $HOME
	KnownHosts   string // default "~/.ssh/known_hosts", expanded
	Sudo         bool
	Range        hcl.Range // of the block

	// The fields below are set only when the OpenSSH client configuration
	// (~/.ssh/config, or $MIGRATE_SSH_CONFIG) had settings for the host:
	// then User, Address (its HostName), Port and KnownHosts above are the
	// resolved values, the plan's own values winning over ssh_config's.

	// SSH is the ssh argument as written, e.g. "old-srv".
	SSH string
	// IdentityFiles are ssh_config's IdentityFile values, expanded. They
	// are offered when IdentityFile (the plan's own) is empty; a missing
	// one is skipped, as ssh does.
	IdentityFiles []string
	// ProxyJump lists the jump hosts, in order, each resolved through
	// ssh_config in turn. A hop's own ProxyJump is not followed.
	ProxyJump []*Host
}

// Tunnel is the tunnel block, with defaults applied.
type Tunnel struct {
	Type        state.TunnelType // "vxlan" | "gre" (IPv4 endpoints) | "ip6gre" (IPv6 endpoints) | "wireguard" | "direct" (one segment, no device: Name and the inner addresses are empty)
	OldEndpoint netip.Addr       // outer address on OLD
	NewEndpoint netip.Addr       // outer address on NEW, same family as OldEndpoint
	// OldBind and NewBind (optional) are the addresses the host's tunnel
	// binds when it does not hold its endpoint (a 1:1 NAT maps the
	// endpoint onto it). Unset, plan finds them: the source address the
	// host uses towards its peer's endpoint.
	OldBind, NewBind netip.Addr
	Name             string       // Linux interface name, default "mig0"
	MTU              int          // 0 = auto
	VNI              uint32       // vxlan only, default 4242
	Port             int          // vxlan UDP port, default 4789
	Key              uint32       // gre and ip6gre only, 0 = none
	ListenPort       int          // wireguard UDP port on both hosts, default 51820
	OldInner         netip.Prefix // inner address of OLD, default 169.254.42.1/30
	NewInner         netip.Prefix // inner address of NEW, default 169.254.42.2/30
	Mark             uint32       // fwmark and ct mark bit(s), default 0x20000
	Table            int          // routing table, default 4242
	Range            hcl.Range
}

// PortRange is an inclusive range of ports; a single port has From == To.
type PortRange struct{ From, To uint16 }

// String renders the range as it is written in a plan file: "25" or
// "10000-10100".
func (r PortRange) String() string {
	if r.From == r.To {
		return strconv.Itoa(int(r.From))
	}
	return strconv.Itoa(int(r.From)) + "-" + strconv.Itoa(int(r.To))
}

// Service is a service block: one address, one protocol, some ports.
type Service struct {
	Name          string // block label, unique
	Address       netip.Addr
	Protocol      state.Proto // "tcp" | "udp"
	Ports         []PortRange // non-empty
	Stage         string      // "old" | "canary" | "new"
	CanaryPercent int         // 1..99 when Stage == "canary", else 0
	// AllowSSHMove is the explicit override of the self-lockout check:
	// the service may move the address:port migrate's own SSH connection
	// to OLD uses. migrate's next connection then reaches NEW's sshd.
	AllowSSHMove bool
	// AllowUnready lets apply move the service even though NEW does not
	// listen on its ports yet (services started on demand). Default false.
	AllowUnready bool
	Range        hcl.Range // of the block
	PortsRange   hcl.Range // of the ports expression
}

// Forward is a forward block: an in-kernel port bouncer. New connections to
// Address on one of Ports, arriving at the managed host On, are sent to To
// (on ToPort, or on the same port when ToPort is 0). There is no tunnel and
// the client address is not preserved; To need not be a managed host.
//
// An address, protocol and port belongs either to one service or to one
// forward, never to both.
type Forward struct {
	Name       string      // block label, unique among forwards
	On         state.Role  // "old" | "new": the host that receives and forwards
	Address    netip.Addr  // an address of host On
	Protocol   state.Proto // "tcp" | "udp"
	Ports      []PortRange // non-empty
	To         netip.Addr  // destination, same family as Address
	ToPort     uint16      // 0 = the same port; set only when Ports is one single port
	Range      hcl.Range   // of the block
	PortsRange hcl.Range   // of the ports expression
}

// Defaults applied to a tunnel block.
const (
	DefaultTunnelName = "mig0"
	DefaultVNI        = 4242
	DefaultVXLANPort  = 4789
	DefaultWGPort     = 51820
	DefaultMark       = 0x20000
	DefaultTable      = 4242
	DefaultSSHPort    = 22
	DefaultKnownHosts = "~/.ssh/known_hosts"
)

// Default inner tunnel addresses.
var (
	DefaultOldInner = netip.MustParsePrefix("169.254.42.1/30")
	DefaultNewInner = netip.MustParsePrefix("169.254.42.2/30")
)

// Error holds every problem found in a plan file. Diagnostics are sorted by
// position and are all of severity hcl.DiagError.
type Error struct {
	Diagnostics hcl.Diagnostics
}

// Error renders one problem per line as "FILE:LINE:COL: SUMMARY; DETAIL".
func (e *Error) Error() string {
	lines := make([]string, 0, len(e.Diagnostics))
	for _, d := range e.Diagnostics {
		lines = append(lines, formatDiagnostic(d))
	}
	return strings.Join(lines, "\n")
}

func formatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		fmt.Fprintf(&b, "%s:%d:%d: ", d.Subject.Filename, d.Subject.Start.Line, d.Subject.Start.Column)
	}
	b.WriteString(oneLine(d.Summary))
	if detail := oneLine(d.Detail); detail != "" {
		b.WriteString("; ")
		b.WriteString(detail)
	}
	return b.String()
}

// oneLine folds whitespace runs, including newlines from hcl's own
// diagnostics, into single spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func newError(diags hcl.Diagnostics) *Error {
	var errs hcl.Diagnostics
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, d)
		}
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Subject, errs[j].Subject
		switch {
		case a == nil || b == nil:
			return a == nil && b != nil
		case a.Filename != b.Filename:
			return a.Filename < b.Filename
		case a.Start.Line != b.Start.Line:
			return a.Start.Line < b.Start.Line
		default:
			return a.Start.Column < b.Start.Column
		}
	})
	return &Error{Diagnostics: errs}
}

// Load reads the plan file at path and parses it.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read plan file: %w", err)
	}
	return Parse(src, path)
}

// Parse parses and validates a plan file. filename is used in error
// positions and as Config.Path. A returned error is a *Error.
func Parse(src []byte, filename string) (*Config, error) {
	return parse(src, filename, true)
}

// parse is Parse; fast == false skips fastParse (the tests compare both).
func parse(src []byte, filename string, fast bool) (*Config, error) {
	body, err := parseBody(src, filename, fast)
	if err != nil {
		return nil, err
	}
	p := &parser{filename: filename}
	cfg := p.file(body)
	if p.diags.HasErrors() {
		return nil, newError(p.diags)
	}
	if p.sshcfg != nil {
		for _, u := range p.sshcfg.Unevaluated() {
			cfg.Warnings = append(cfg.Warnings, u+": migrate does not evaluate Match blocks and ignores these settings; if ssh applies them to a host of this plan, migrate connects differently (put them in a Host block, or in the plan)")
		}
	}
	return cfg, nil
}

// parseBody parses the file's HCL: with fastParse when the file keeps to
// the subset it reads (plan files usually do), else with hclsyntax, whose
// diagnostics a syntax error returns. Both give the same AST.
func parseBody(src []byte, filename string, fast bool) (*hclsyntax.Body, error) {
	if fast {
		if body, ok := fastParse(src, filename); ok {
			return body, nil
		}
	}
	file, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, newError(diags)
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		// Cannot happen with hclsyntax.ParseConfig; guard anyway.
		return nil, &Error{Diagnostics: hcl.Diagnostics{{
			Severity: hcl.DiagError,
			Summary:  "unreadable plan file",
			Detail:   "write the plan in native HCL syntax",
			Subject:  &hcl.Range{Filename: filename, Start: hcl.InitialPos, End: hcl.InitialPos},
		}}}
	}
	return body, nil
}
