package plan

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// FormatVersion of a saved plan file.
const FormatVersion = 1

// Plan is a plain value: the steps per host, and the digests of the facts
// they were computed from (a saved plan is refused when the facts changed).
// It holds no connection; fields meant for display never change what apply
// does.
type Plan struct {
	FormatVersion int                           `json:"format_version"`
	ConfigPath    string                        `json:"config_path"`
	CreatedAt     time.Time                     `json:"created_at"`
	Hosts         []HostPlan                    `json:"hosts"` // in apply order: new, then old
	FactsDigest   map[string]string             `json:"facts_digest"`
	Verify        *Verify                       `json:"verify,omitempty"`
	Notes         []string                      `json:"notes,omitempty"` // display only
	Requests      map[string]state.FactsRequest `json:"facts_requests"`
	// Readiness and Flows are shown to the operator; apply recomputes
	// readiness from fresh facts before it acts.
	Readiness []Readiness    `json:"readiness,omitempty"`
	Flows     []ServiceFlows `json:"flows,omitempty"`
	// Intent is a digest of what the plan asks the hosts to look like
	// (both hosts' desired objects): the change an apply makes, recorded
	// with its run and shown by rollback.
	Intent string `json:"intent,omitempty"`
	// Conntrack is OLD's conntrack capacity as plan saw it (display only:
	// apply checks fresh facts again).
	Conntrack *ConntrackCheck `json:"conntrack,omitempty"`
}

// HostPlan is one host's ordered steps.
type HostPlan struct {
	Host  string       `json:"host"`
	Steps []state.Step `json:"steps"`
}

// Verify says how apply checks the tunnel before it sends traffic into it:
// each host pings the other's inner address, then again with packets of
// its tunnel device's MTU: an underlay path that carries less (a smaller
// MTU on the way and fragments dropped, or ICMP "fragmentation needed"
// filtered) passes small packets, apply's probe and short requests, and
// stalls every upload or download of the moved services.
type Verify struct {
	OldPings string `json:"old_pings"` // NEW's inner address, pinged from OLD
	NewPings string `json:"new_pings"` // OLD's inner address, pinged from NEW
	// OldSize and NewSize are the MTUs of the tunnel device on OLD and
	// NEW, the sizes of the full-size pings (0: none, a direct tunnel).
	OldSize int `json:"old_size,omitempty"`
	NewSize int `json:"new_size,omitempty"`
	// Firewall names, as plan found the hosts, the firewalls that lack
	// the rule for the tunnel's own packets (TunnelFirewallHint): what
	// a failed tunnel check most likely means. "" when none does.
	Firewall string `json:"firewall,omitempty"`
}

// Counts returns (add, change, destroy).
func (p *Plan) Counts() (add, change, destroy int) {
	for _, h := range p.Hosts {
		for _, s := range h.Steps {
			switch s.Action {
			case state.Create:
				add++
			case state.Update:
				change++
			case state.Delete:
				destroy++
			}
		}
	}
	return
}

// Empty reports a plan with nothing to do.
func (p *Plan) Empty() bool {
	a, c, d := p.Counts()
	return a+c+d == 0
}

// Steps returns host's steps.
func (p *Plan) Steps(host string) []state.Step {
	for _, h := range p.Hosts {
		if h.Host == host {
			return h.Steps
		}
	}
	return nil
}

// Make computes the plan. It validates the config against the facts (a
// service address OLD must hold, the SSH port migrate itself uses) before
// any step is produced.
func Make(c *config.Config, facts map[string]state.Facts, j *state.Journal, now time.Time) (*Plan, error) {
	if h := c.Hosts[Old]; h != nil {
		if err := CheckSelfLockout(c, Old, h.Address, h.Port); err != nil {
			return nil, err
		}
	}
	if err := CheckAgainstFacts(c, facts); err != nil {
		return nil, err
	}
	if err := CheckTunnelEdits(c, facts, j); err != nil {
		return nil, err
	}
	want, err := Desired(c, facts, map[string]map[string]*state.Object{Old: j.Owned(Old), New: j.Owned(New)})
	if err != nil {
		return nil, err
	}
	p := &Plan{
		FormatVersion: FormatVersion,
		ConfigPath:    c.Path,
		CreatedAt:     now.UTC(),
		FactsDigest:   map[string]string{},
		Requests:      map[string]state.FactsRequest{},
	}
	if c.Tunnel != nil {
		p.Verify = &Verify{
			OldPings: c.Tunnel.NewInner.Addr().String(),
			NewPings: c.Tunnel.OldInner.Addr().String(),
			OldSize:  linkMTU(want[Old], c.Tunnel.Name),
			NewSize:  linkMTU(want[New], c.Tunnel.Name),
		}
		if Direct(c) {
			p.Verify = directVerify(c)
		}
		p.Verify.Firewall = TunnelFirewallHint(c, facts)
	}
	p.Intent = intentDigest(want)
	if c.Tunnel != nil {
		binds, err := Bindings(c, facts)
		if err != nil {
			return nil, err
		}
		p.Notes = append(p.Notes, NATNotes(c, binds)...)
		p.Notes = append(p.Notes, DirectNotes(c, facts)...)
		if n := MTUNote(c, p.Verify); n != "" {
			p.Notes = append(p.Notes, n)
		}
		// Behind NAT, migrate's SSH connection to OLD's public address
		// arrives at the address OLD holds: that is the one a service
		// could move.
		if b, h := binds[Old], c.Hosts[Old]; h != nil && b.NATed() && h.Address == b.Endpoint.String() {
			if err := CheckSelfLockout(c, Old, b.Addr.String(), h.Port); err != nil {
				return nil, err
			}
		}
	}
	for _, h := range []string{New, Old} {
		if facts[h].NftRemoved {
			p.Notes = append(p.Notes, NftRemovedNote("host "+h))
		}
		if n := NftDriftNote(h, facts[h], j.Owned(h)); n != "" {
			p.Notes = append(p.Notes, n)
		}
	}
	p.Notes = append(p.Notes, Warnings(c, facts)...)
	p.Notes = append(p.Notes, BootNotes(want, facts)...)
	p.Notes = append(p.Notes, SysctlConfNotes(want, facts)...)
	p.Notes = append(p.Notes, NftConfNotes(facts)...)
	for _, h := range []string{New, Old} {
		if n := SpaceNote(h, facts[h].StateDir); n != "" {
			p.Notes = append(p.Notes, n)
		}
	}
	p.Notes = append(p.Notes, NetworkdNotes(want, facts)...)
	if n := UDPWarmupNote(c, facts[Old]); n != "" {
		p.Notes = append(p.Notes, n)
	}
	if r := CheckOldConntrack(c, facts[Old]); r != nil {
		p.Conntrack = r
		for _, n := range []string{r.Line(), r.BucketNote()} {
			if n != "" {
				p.Notes = append(p.Notes, n)
			}
		}
	}
	p.Readiness = CheckReadiness(c, facts[New])
	p.Flows = Flows(c, facts[Old])
	for _, h := range []string{New, Old} {
		steps, err := Diff(h, want[h], facts[h], j.Owned(h))
		if err != nil {
			return nil, err
		}
		p.Hosts = append(p.Hosts, HostPlan{Host: h, Steps: steps})
		p.Notes = append(p.Notes, relinkNotes(h, steps)...)
		p.FactsDigest[h] = facts[h].Digest()
		p.Requests[h] = FactsRequest(c, h)
	}
	p.Notes = append(p.Notes, RemovedNotes(c, facts[Old], p.Hosts)...)
	return p, nil
}

// CheckAgainstFacts refuses configs the live hosts contradict.
func CheckAgainstFacts(c *config.Config, facts map[string]state.Facts) error {
	old := facts[Old]
	var binds map[string]Binding
	var bindErr error
	if c.Tunnel != nil {
		binds, bindErr = Bindings(c, facts)
	}
	for _, s := range c.Services {
		if !old.HasAddr(s.Address) {
			if b, ok := binds[Old]; ok && b.NATed() && s.Address.Is4() == b.Addr.Is4() {
				return fmt.Errorf("%s: service %q: host old does not hold address %s. OLD is behind NAT: it holds %s, and the NAT rewrites the packets its clients send to %s before OLD sees them; a service address is the one OLD's kernel sees: write address = %q", where(s.Range), s.Name, s.Address, b.Addr, b.Endpoint, b.Addr.String())
			}
			return fmt.Errorf("%s: service %q: host old does not hold address %s; a service address must be one of OLD's addresses (see `ip addr` on old)", where(s.Range), s.Name, s.Address)
		}
	}
	for _, f := range c.Forwards {
		if !facts[string(f.On)].HasAddr(f.Address) {
			return fmt.Errorf("%s: forward %q: host %s does not hold address %s; a forward listens on an address of the host named by `on`", where(f.Range), f.Name, f.On, f.Address)
		}
	}
	if err := CheckDirect(c, facts); err != nil {
		return err
	}
	return bindErr
}

// CheckSelfLockout refuses a config that would move the address and port
// migrate's own SSH connection to a host arrives on. sshIP is the address
// the connection to host actually reached.
func CheckSelfLockout(c *config.Config, host, sshIP string, sshPort int) error {
	if host != Old {
		return nil
	}
	for _, s := range c.Services {
		if s.Protocol != state.TCP || s.Address.String() != sshIP || s.Stage == "old" || s.AllowSSHMove {
			continue
		}
		for _, r := range s.Ports {
			if int(r.From) <= sshPort && sshPort <= int(r.To) {
				return fmt.Errorf("%s: service %q would move %s:%d, the SSH port migrate reaches host old on; migrating it would cut migrate's own connection. Remove port %d from the service, reach old on another address or port, or, if moving sshd is the point, set allow_ssh_move = true in the service", where(s.PortsRange), s.Name, sshIP, sshPort, sshPort)
			}
		}
	}
	return nil
}

// Save writes the plan as JSON.
func (p *Plan) Save(path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// Load reads a plan saved with Save.
func Load(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("%s is not a saved plan: %w", path, err)
	}
	if p.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%s: saved plan format %d, this migrate reads %d", path, p.FormatVersion, FormatVersion)
	}
	return &p, nil
}

// where renders a source position as FILE:LINE:COL.
func where(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// intentDigest hashes both hosts' desired objects and unwanted keys, in
// key order.
func intentDigest(want map[string]HostDesired) string {
	h := sha256.New()
	for _, host := range []string{New, Old} {
		d := want[host]
		objs := append([]state.Object(nil), d.Objects...)
		sort.Slice(objs, func(i, j int) bool { return objs[i].Key() < objs[j].Key() })
		b, _ := json.Marshal(struct {
			Host     string
			Objects  []state.Object
			Unwanted []string
		}{host, objs, d.Unwanted})
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// relinkNotes says which tunnel devices an update makes again.
func relinkNotes(host string, steps []state.Step) []string {
	var out []string
	for _, st := range steps {
		if st.Action != state.Update || st.Before.Link == nil || st.After.Link == nil || st.Before.Link.ChangesInPlace(*st.After.Link) {
			continue
		}
		out = append(out, fmt.Sprintf("host %s: tunnel device %s is made again (its type, endpoints, VNI, port or key cannot change in place); the same step puts back its addresses, routes and sysctls, and connections through the tunnel pause for a moment (TCP resends; UDP datagrams sent then are lost)", host, st.After.Link.Name))
	}
	return out
}

// CheckTunnelEdits refuses the tunnel edits a migration under way cannot
// take: a name other than the device migrate made on a host and still has
// there (renaming means a second device next to the first: the kernel
// refuses a second VXLAN device with the same VNI, port and local address,
// "file exists", and the routes, sysctls and nft rules of the moved
// connections name the old device), and a mark other than the one the
// moved connections carry.
func CheckTunnelEdits(c *config.Config, facts map[string]state.Facts, j *state.Journal) error {
	if c.Tunnel == nil {
		return nil
	}
	for _, h := range []string{Old, New} {
		for k, prior := range j.Owned(h) {
			name, ok := strings.CutPrefix(k, "link ")
			// Direct has no device: the old one is simply deleted.
			if !ok || prior != nil || name == c.Tunnel.Name || !facts[h].HasLink(name) || Direct(c) {
				continue // not made by migrate, the same name, or gone
			}
			return fmt.Errorf("%s: tunnel: name %q, but migrate's tunnel device on host %s is %q: a tunnel cannot be renamed during a migration (the moved connections' routes and rules name the device, and the kernel refuses a second VXLAN device with the same VNI and port). Keep name = %q, or move everything back with `migrate rollback --all` first", where(c.Tunnel.Range), c.Tunnel.Name, h, name, name)
		}
		// The mark lives on in conntrack: every connection moved so far
		// carries the old bit, and with the new one OLD's table no longer
		// knows them, takes their packets back into its own stack and
		// resets them (seen in the lab with a held connection).
		if m := appliedMark(j, h); m != 0 && m != c.Tunnel.Mark {
			return fmt.Errorf("%s: tunnel: mark %#x, but migrate's table on host %s marks the moved connections with %#x: they carry that mark in conntrack until they end, and with a new one OLD would take their packets back and reset them. Keep mark = \"%#x\", or move everything back with `migrate rollback --all` first", where(c.Tunnel.Range), c.Tunnel.Mark, h, m, m)
		}
	}
	return nil
}

// NftRemovedNote says that something other than migrate removed its table
// from host, and what usually does.
func NftRemovedNote(host string) string {
	return "migrate's nft table on " + host + " is gone, although migrate wrote it and has not removed it: something flushed it (`nft flush ruleset`; `systemctl restart` or `reload nftables` with a configuration that begins with `flush ruleset`, as Debian's /etc/nftables.conf does; a reboot without migrate's boot unit). Run migrate apply to put it back."
}

// NftDriftNote says that host's table of migrate's name is not what
// migrate last wrote, and what apply does about it; "" when it is.
func NftDriftNote(host string, f state.Facts, owned map[string]*state.Object) string {
	if f.Nft == nil || f.NftDrift == "" {
		return ""
	}
	k := (state.Object{Nft: &state.NftTable{Family: "inet", Name: NftTableName}}).Key()
	if unrecordedNft(f.Nft, owned, k) {
		return fmt.Sprintf("host %s has a table inet %s that no migrate apply recorded (the agent has no record of it, the journal no step): a copy of migrate's table saved with the ruleset (`nft list ruleset > /etc/nftables.conf`) and loaded again by nftables.service, or one made by hand. apply replaces it with the plan's table, and rollback then removes it.", host, NftTableName)
	}
	return fmt.Sprintf("host %s: %s (a hand edit, or a copy of an earlier stage saved with the ruleset and loaded again by nftables.service): until apply writes the plan's table again, the services' new flows do not go where migrate last applied.", host, f.NftDrift)
}

// RemovedNotes warns about services that OLD's live table still moves or
// counts, that the plan no longer names, and whose connections go through
// the tunnel to NEW right now: whether this apply cuts them (it removes
// OLD's route into the tunnel, or the address on NEW) or they drain.
func RemovedNotes(c *config.Config, oldFacts state.Facts, hosts []HostPlan) []string {
	if oldFacts.Nft == nil || oldFacts.Stats == nil {
		return nil
	}
	configured := map[string]bool{}
	for _, s := range AllServices(c) {
		configured[s.Key()] = true
	}
	type group struct {
		addr  netip.Addr
		proto state.Proto
		ports []string
		flows int
	}
	var order []string
	groups := map[string]*group{}
	for _, s := range oldFacts.Nft.Spec.Plumbed() {
		k := s.Key()
		if configured[k] {
			continue
		}
		n := oldFacts.Stats.Flows[k].ToNew
		if n == 0 {
			continue
		}
		gk := s.Addr.String() + " " + string(s.Proto)
		g := groups[gk]
		if g == nil {
			g = &group{addr: s.Addr, proto: s.Proto}
			groups[gk] = g
			order = append(order, gk)
		}
		g.ports = append(g.ports, fmt.Sprint(s.Port))
		g.flows += n
	}
	var out []string
	for _, gk := range order {
		g := groups[gk]
		cut := ""
		for _, h := range hosts {
			for _, st := range h.Steps {
				if st.Action != state.Delete || st.Before == nil {
					continue
				}
				switch {
				case h.Host == Old && st.Before.Rule != nil && st.Before.Rule.Mark != 0:
					cut = "it removes OLD's route into the tunnel"
				case h.Host == New && st.Before.Addr != nil && st.Before.Addr.CIDR.Addr() == g.addr:
					cut = "it removes " + g.addr.String() + " from NEW"
				}
			}
		}
		what := fmt.Sprintf("WARNING host old: %s %s port(s) %s left the plan while %d connection(s) to them go through the tunnel to NEW", g.addr, g.proto, strings.Join(g.ports, ","), g.flows)
		if cut != "" {
			out = append(out, what+": this apply cuts them ("+cut+"). To let them finish, keep the service with stage = \"old\" until `migrate status` shows none VIA TUNNEL, then remove it")
		} else {
			out = append(out, what+": they keep draining there (OLD still routes the connections it moved), but `migrate status` no longer shows them")
		}
	}
	return out
}

// appliedMark is the mark of the nft table migrate last applied on host,
// as the journal records it (0: none applied, or deleted since). The
// journal, not the live table: a table edited by hand does not change
// what the moved connections carry.
func appliedMark(j *state.Journal, host string) uint32 {
	var m uint32
	for _, e := range j.Active() {
		st := e.Step
		if st.Host != host || st.Key() != (state.Object{Nft: &state.NftTable{Family: "inet", Name: NftTableName}}).Key() {
			continue
		}
		m = 0
		if st.After != nil && st.After.Nft != nil {
			m = st.After.Nft.Spec.Mark
		}
	}
	return m
}

// linkMTU is the MTU of link name among h's objects (0 if none).
func linkMTU(h HostDesired, name string) int {
	for _, o := range h.Objects {
		if o.Link != nil && o.Link.Name == name {
			return o.Link.MTU
		}
	}
	return 0
}

// MTUNote warns when the tunnel's MTU, unset in the plan, comes out
// different on the two hosts: each is its own underlay device's MTU less
// the encapsulation, and one host on a jumbo-frame network (AWS's 9001)
// sends packets the path between the endpoints (usually 1500) cannot
// carry whole. apply's full-size check fails then where the path drops
// fragments; the note says what to set before that.
func MTUNote(c *config.Config, v *Verify) string {
	if c.Tunnel == nil || c.Tunnel.MTU != 0 || v == nil || v.OldSize == 0 || v.NewSize == 0 || v.OldSize == v.NewSize {
		return ""
	}
	return fmt.Sprintf("WARNING: the tunnel's MTU differs between the hosts: %d on OLD, %d on NEW (each is its underlay device's MTU less the encapsulation; a host on a jumbo-frame network, such as AWS's 9001, gets a larger one). The path between the endpoints carries packets of the smaller host's size at most, as a rule: set `mtu = %d` in the tunnel block (apply's full-size tunnel check fails otherwise where the path drops fragments)",
		v.OldSize, v.NewSize, min(v.OldSize, v.NewSize))
}
