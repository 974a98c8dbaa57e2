// Package examples_test checks the example plan files: each one parses, is
// already in `migrate fmt`'s canonical form, passes the checks `migrate plan`
// makes against the live hosts, and builds the data path its comments
// promise. The facts are synthetic: OLD holds the documentation addresses
// the examples use (as the namespace lab does), NEW holds its own.
package examples_test

import (
	"bytes"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// hostFacts is a host with one uplink holding addrs, the kernel's default
// rules, and forwarding off.
func hostFacts(addrs ...string) state.Facts {
	f := state.Facts{
		Links: []state.Link{{Name: "lo", Type: "loopback", MTU: 65536, Up: true}, {Name: "eth0", Type: "veth", MTU: 1500, Up: true}},
		Rules: []state.Rule{
			{Family: 4, Priority: 0, Table: state.TableLocal, Protocol: 2},
			{Family: 4, Priority: 32766, Table: state.TableMain, Protocol: 2},
			{Family: 4, Priority: 32767, Table: 253, Protocol: 2},
			{Family: 6, Priority: 0, Table: state.TableLocal, Protocol: 2},
			{Family: 6, Priority: 32766, Table: state.TableMain, Protocol: 2},
		},
		Sysctls: map[string]string{
			"net.ipv4.ip_forward":          "0",
			"net.ipv6.conf.all.forwarding": "0",
			"net.ipv6.conf.eth0.accept_ra": "0",
		},
	}
	for _, a := range addrs {
		f.Addrs = append(f.Addrs, state.Addr{Dev: "eth0", CIDR: netip.MustParsePrefix(a)})
	}
	return f
}

// labFacts: the documentation addresses of the examples, which are also
// the namespace lab's.
func labFacts() map[string]state.Facts {
	return map[string]state.Facts{
		plan.Old: hostFacts("198.51.100.10/24", "2001:db8:100::10/64"),
		plan.New: hostFacts("203.0.113.20/24", "2001:db8:200::20/64"),
	}
}

// hclFiles lists every .hcl file under the examples directory.
func hclFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".hcl") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestEveryExampleLoadsAndIsCanonical: every .hcl file under examples/
// loads, is already what `migrate fmt` would write, and plans against
// facts where OLD holds its addresses (so `migrate plan` would accept it:
// the address checks and the SSH self-lockout check included).
func TestEveryExampleLoadsAndIsCanonical(t *testing.T) {
	files := hclFiles(t)
	for _, want := range []string{"basic.hcl", "forward.hcl", "mail.hcl", "dns.hcl", "dualstack.hcl",
		filepath.Join("staged", "1-prepare.hcl"), filepath.Join("staged", "2-canary.hcl"), filepath.Join("staged", "3-move.hcl")} {
		if !slices.Contains(files, want) {
			t.Errorf("examples/%s is missing (found %v)", want, files)
		}
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			c, err := config.Load(f)
			if err != nil {
				t.Fatalf("config.Load: %v", err)
			}
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			out, err := config.Format(src, f)
			if err != nil {
				t.Fatalf("config.Format: %v", err)
			}
			if !bytes.Equal(src, out) {
				t.Errorf("not canonical: run `migrate fmt %s`; it would write:\n%s", f, out)
			}
			if _, err := plan.Make(c, labFacts(), state.NewJournal(), time.Unix(0, 0)); err != nil {
				t.Errorf("plan.Make against OLD holding the examples' addresses: %v", err)
			}
		})
	}
}

// model is one example's desired state, as lines per host.
type model struct {
	cfg     *config.Config
	desired map[string]plan.HostDesired
}

func load(t *testing.T, path string) model {
	t.Helper()
	c, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return build(t, c)
}

func build(t *testing.T, c *config.Config) model {
	t.Helper()
	facts := labFacts()
	if _, err := plan.Make(c, facts, state.NewJournal(), time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	d, err := plan.Desired(c, facts, map[string]map[string]*state.Object{plan.Old: {}, plan.New: {}})
	if err != nil {
		t.Fatal(err)
	}
	return model{cfg: c, desired: d}
}

// lines are host's desired objects, one String() per line.
func (m model) lines(host string) []string {
	var out []string
	for _, o := range m.desired[host].Objects {
		if o.Nft == nil {
			out = append(out, o.String())
		}
	}
	return out
}

func (m model) nft(t *testing.T, host string) state.NftSpec {
	t.Helper()
	for _, o := range m.desired[host].Objects {
		if o.Nft != nil {
			return o.Nft.Spec
		}
	}
	t.Fatalf("no nft table on %s", host)
	return state.NftSpec{}
}

func (m model) has(t *testing.T, host string, want ...string) {
	t.Helper()
	got := m.lines(host)
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Errorf("%s: no %q among:\n%s", host, w, strings.Join(got, "\n"))
		}
	}
}

func (m model) hasNot(t *testing.T, host, substr string) {
	t.Helper()
	for _, l := range m.lines(host) {
		if strings.Contains(l, substr) {
			t.Errorf("%s: unexpected %q", host, l)
		}
	}
}

// moved renders OLD's moved services as "addr proto port percent".
func moved(sp state.NftSpec) []string {
	var out []string
	for _, s := range sp.Services {
		out = append(out, fmt.Sprintf("%s %s %d %d", s.Addr, s.Proto, s.Port, s.Percent))
	}
	return out
}

func sameList(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

// The IPv4 path of one migrated address: what every example's comments
// rely on (NEW: the address local on lo, replies and outbound from it into
// the tunnel, its own traffic to it out of the uplink, no ARP for it).
func hasV4Path(t *testing.T, m model, addr string) {
	t.Helper()
	m.has(t, plan.New,
		addr+"/32 dev lo",
		"v4 pref 1100 from "+addr+"/32 lookup 4242 proto 77",
		"v4 pref 500 to "+addr+"/32 iif lo lookup main proto 77",
		"table 4242 0.0.0.0/0 via 169.254.42.1 dev mig0",
	)
	m.has(t, plan.Old,
		"v4 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77",
		"table 4242 0.0.0.0/0 via 169.254.42.2 dev mig0",
		"table 4242 throw 203.0.113.20/32",
		"net.ipv4.ip_forward = 1",
	)
	if sp := m.nft(t, plan.New); !slices.Contains(sp.NoARP, netip.MustParseAddr(addr)) {
		t.Errorf("NEW answers ARP for %s: no_arp %v", addr, sp.NoARP)
	}
}

// mail.hcl: SMTP, submission and IMAPS move at 100 %; outbound SMTP from
// OLD's address goes back through the tunnel (NEW's from-rule); port 22,
// migrate's own SSH, stays; the commented IPv6 block is valid when
// uncommented and gets the IPv6 path over the same tunnel.
func TestMail(t *testing.T) {
	m := load(t, "mail.hcl")
	sameList(t, "OLD moves", moved(m.nft(t, plan.Old)), []string{
		"198.51.100.10 tcp 25 100", "198.51.100.10 tcp 587 100", "198.51.100.10 tcp 993 100",
	})
	hasV4Path(t, m, "198.51.100.10")
	m.has(t, plan.Old, "mig0 type vxlan local 198.51.100.10 remote 203.0.113.20 vni 4242 dstport 4789 address 02:6d:67:fe:2a:01 mtu 1450 up")
	m.hasNot(t, plan.New, "v6 ")
	for _, s := range m.cfg.Services {
		for _, r := range s.Ports {
			if r.From <= 22 && 22 <= r.To {
				t.Errorf("service %s moves port 22, migrate's own SSH port", s.Name)
			}
		}
	}

	src, err := os.ReadFile("mail.hcl")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile(`(?m)^# (service "smtp6" \{\n(?:# .*\n)*?)# \}\n`)
	sm := block.FindSubmatch(src)
	if sm == nil {
		t.Fatal("mail.hcl: the commented-out smtp6 block is gone")
	}
	v6 := regexp.MustCompile(`(?m)^# ?`).ReplaceAll(sm[0], nil)
	c, err := config.Parse(append(append(src, '\n'), v6...), "mail+smtp6.hcl")
	if err != nil {
		t.Fatalf("mail.hcl with smtp6 uncommented: %v", err)
	}
	m6 := build(t, c)
	m6.has(t, plan.New,
		"2001:db8:100::10/128 dev lo nodad noprefixroute",
		"v6 pref 1100 from 2001:db8:100::10/128 lookup 4242 proto 77",
	)
	if got := moved(m6.nft(t, plan.Old)); !slices.Contains(got, "2001:db8:100::10 tcp 25 100") {
		t.Errorf("smtp6 uncommented: OLD moves %q", got)
	}
}

// dns.hcl: the same address moves on UDP and TCP port 53.
func TestDNS(t *testing.T) {
	m := load(t, "dns.hcl")
	sameList(t, "OLD moves", moved(m.nft(t, plan.Old)), []string{
		"198.51.100.10 tcp 53 100", "198.51.100.10 udp 53 100",
	})
	hasV4Path(t, m, "198.51.100.10")
}

// dualstack.hcl: both families get NEW's lo addresses, the rules and the
// routes via the fixed link-local inner addresses, over one IPv4 VXLAN; the
// IPv6-underlay variant in its comment plans too, with a 20 bytes smaller
// MTU.
func TestDualStack(t *testing.T) {
	m := load(t, "dualstack.hcl")
	sameList(t, "OLD moves", moved(m.nft(t, plan.Old)), []string{
		"198.51.100.10 tcp 80 100", "198.51.100.10 tcp 443 100",
		"2001:db8:100::10 tcp 80 100", "2001:db8:100::10 tcp 443 100",
	})
	hasV4Path(t, m, "198.51.100.10")
	m.has(t, plan.New,
		"2001:db8:100::10/128 dev lo nodad noprefixroute",
		"v6 pref 1100 from 2001:db8:100::10/128 lookup 4242 proto 77",
		"v6 pref 500 to 2001:db8:100::10/128 iif lo lookup main proto 77",
		"v6 pref 1000 lookup local proto 77",
		"fe80::42:2/64 dev mig0 nodad",
		"table 4242 ::/0 via fe80::42:1 dev mig0",
		"mig0 type vxlan local 203.0.113.20 remote 198.51.100.10 vni 4242 dstport 4789 address 02:6d:67:fe:2a:02 mtu 1450 up",
	)
	m.has(t, plan.Old,
		"v6 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77",
		"v6 pref 1000 lookup local proto 77",
		"fe80::42:1/64 dev mig0 nodad",
		"table 4242 ::/0 via fe80::42:2 dev mig0",
		"net.ipv6.conf.all.forwarding = 1",
	)
	for _, h := range []string{plan.Old, plan.New} {
		if !slices.Contains(m.desired[h].Unwanted, plan.LocalRuleKey(6)) || !slices.Contains(m.desired[h].Unwanted, plan.LocalRuleKey(4)) {
			t.Errorf("%s: the local rule does not move in both families: unwanted %v", h, m.desired[h].Unwanted)
		}
	}

	src, err := os.ReadFile("dualstack.hcl")
	if err != nil {
		t.Fatal(err)
	}
	v6 := strings.NewReplacer(`old_endpoint = "198.51.100.10"`, `old_endpoint = "2001:db8:100::10"`,
		`new_endpoint = "203.0.113.20"`, `new_endpoint = "2001:db8:200::20"`).Replace(string(src))
	c, err := config.Parse([]byte(v6), "dualstack-v6underlay.hcl")
	if err != nil {
		t.Fatal(err)
	}
	m6 := build(t, c)
	m6.has(t, plan.Old,
		"mig0 type vxlan local 2001:db8:100::10 remote 2001:db8:200::20 vni 4242 dstport 4789 address 02:6d:67:fe:2a:01 mtu 1430 up",
		"table 4242 throw 2001:db8:200::20/128",
	)
}

// nonStage is a staged file's text without comments and without the lines
// that set the stage: what must be the same in every step.
func nonStage(src []byte) string {
	var b strings.Builder
	for _, l := range strings.Split(string(src), "\n") {
		if i := strings.Index(l, "#"); i >= 0 {
			l = l[:i]
		}
		l = strings.TrimSpace(l)
		f := strings.Fields(l)
		if l == "" || len(f) > 0 && (f[0] == "stage" || f[0] == "canary_percent") {
			continue
		}
		b.WriteString(strings.Join(f, " ") + "\n")
	}
	return b.String()
}

// staged/: the files differ only in stage; step 1 moves nothing, step 2
// moves 10 % of new connections, step 3 all of them; the path (everything
// but OLD's nft sets) is the same in every step, so moving between steps
// touches only OLD's nft table.
func TestStaged(t *testing.T) {
	steps := []struct {
		file  string
		moved []string
	}{
		{"1-prepare.hcl", nil},
		{"2-canary.hcl", []string{"198.51.100.10 tcp 80 10", "198.51.100.10 tcp 443 10"}},
		{"3-move.hcl", []string{"198.51.100.10 tcp 80 100", "198.51.100.10 tcp 443 100"}},
	}
	var first model
	var firstText string
	for i, st := range steps {
		path := filepath.Join("staged", st.file)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		m := load(t, path)
		sameList(t, st.file+": OLD moves", moved(m.nft(t, plan.Old)), st.moved)
		hasV4Path(t, m, "198.51.100.10")
		if got := len(m.nft(t, plan.Old).Accounted); got != 2 {
			t.Errorf("%s: %d ports counted on OLD, want 2 (80 and 443, whatever the stage)", st.file, got)
		}
		if i == 0 {
			first, firstText = m, nonStage(src)
			continue
		}
		if got := nonStage(src); got != firstText {
			t.Errorf("%s differs from %s in more than comments and stage:\n%s\n---\n%s", st.file, steps[0].file, got, firstText)
		}
		for _, h := range []string{plan.Old, plan.New} {
			sameList(t, st.file+": "+h+"'s path vs step 1", m.lines(h), first.lines(h))
		}
		if m.nft(t, plan.New).Digest() != first.nft(t, plan.New).Digest() {
			t.Errorf("%s: NEW's nft table differs from step 1's", st.file)
		}
	}
	readme, err := os.ReadFile(filepath.Join("staged", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"migrate apply    -f 1-prepare.hcl", "migrate apply -f 2-canary.hcl", "migrate apply -f 3-move.hcl", "migrate rollback --all -f 3-move.hcl", "migrate status"} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("staged/README.md does not mention %q", want)
		}
	}
}
