package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// FactsRequest says what the planner needs to know about a host beyond the
// always-collected links, addresses and rules.
type FactsRequest struct {
	Tables []int `json:"tables,omitempty"` // routing tables whose routes to dump
	// Sysctls are dotted names; a "*" component matches every entry
	// there (net.ipv6.conf.*.accept_ra), each reported by its full name.
	Sysctls  []string `json:"sysctls,omitempty"`
	NftTable string   `json:"nft_table"` // name of migrate's tables (inet, and arp on NEW)
	// Flows asks for conntrack counts of these (address, protocol,
	// destination port) triples; Mark is the bit that says "sent to NEW".
	Flows []NftService `json:"flows,omitempty"`
	Mark  uint32       `json:"mark,omitempty"`
	// Sockets asks, for each of Flows, for the host's own connected
	// sockets too (sock_diag): conntrack misses connections that have
	// been idle since before conntrack ran in the namespace. Needs Flows.
	Sockets bool `json:"sockets,omitempty"`
	// Listeners asks for the host's listening TCP and bound UDP sockets.
	Listeners bool `json:"listeners,omitempty"`
	// NoOwners leaves out the listeners' processes: no scan of every
	// process's file descriptors (status, which repeats with --watch).
	NoOwners bool `json:"no_owners,omitempty"`
	// Chains asks for the base chains of other nft tables, to warn about
	// what would break the data path (a forward drop policy), and the
	// rules of ufw's user chains (Facts.FwRules).
	Chains bool `json:"chains,omitempty"`
	// Conntrack asks how full the host's conntrack table is, and how
	// many sockets the host holds (what it will track once migrate's
	// table turns tracking on).
	Conntrack bool `json:"conntrack,omitempty"`
	// Networkd asks whether systemd-networkd runs in the agent's network
	// namespace and whether it removes rules and routes it did not make.
	Networkd bool `json:"networkd,omitempty"`
	// NoCounters skips reading the nft counters (Stats.Counters and
	// UnderlayDropped): plan and apply do not use them, and at 10 000
	// services they are a map of 10 000 entries to build and send.
	NoCounters bool `json:"no_counters,omitempty"`
	// ForUpdate says an apply follows: an agent that verified its table
	// by the stamp alone renders it in the background while the CLI
	// plans, so that the update starts from it. plan, which changes
	// nothing, leaves it unset and costs the host no rendering.
	ForUpdate bool `json:"for_update,omitempty"`
}

// Facts is what an agent reports about its host. It is a plain value.
type Facts struct {
	Hostname string            `json:"hostname"`
	Kernel   string            `json:"kernel"`
	Links    []Link            `json:"links"` // all links; tunnel attributes only for vxlan/gre
	Addrs    []Addr            `json:"addrs"`
	Rules    []Rule            `json:"rules"`
	Routes   []Route           `json:"routes"` // routes in the requested tables only
	Sysctls  map[string]string `json:"sysctls"`
	// Nft is migrate's table when present and verified against the
	// digest in its rules. NftDrift explains a table that is present but
	// does not match what migrate last wrote.
	Nft      *NftTable `json:"nft,omitempty"`
	NftDrift string    `json:"nft_drift,omitempty"`
	// NftRemoved: the table is not in the kernel, although the agent's
	// record says migrate wrote it and has not removed it: something else
	// did (`nft flush ruleset`, a restart or reload of nftables.service,
	// a reboot without the boot unit).
	NftRemoved bool `json:"nft_removed,omitempty"`
	// Chains are the chains of nft tables migrate does not own: base
	// chains, and regular ones (Hook "": Docker's DOCKER-USER, ufw's
	// ufw-user-forward), for plan's warnings.
	Chains []BaseChain `json:"chains,omitempty"`
	// FwRules are the rules of the few foreign chains where ufw and
	// firewalld keep what the operator allowed (FwRuleChains), decoded
	// as far as plan needs to see whether migrate's traffic is allowed.
	// Not part of Digest: the operator adds them after planning.
	FwRules []FwRule `json:"fw_rules,omitempty"`
	// RPFilter6 names the tables ip6 raw and mangle of nft's ruleset
	// (iptables-nft's) whose PREROUTING drops what fails an inverted
	// reverse-path match (`-m rpfilter --invert -j DROP`: firewalld's
	// IPv6_rpfilter on its iptables backend), as "mangle" (the legacy
	// tables': LegacyFamily.RPFilter). Not part of Digest, as FwRules.
	RPFilter6 []string `json:"rpfilter6,omitempty"`
	// Listeners are the listening TCP and bound UDP sockets (when
	// asked), from sock_diag, sorted. Not part of Digest: daemons come and
	// go without changing what migrate manages.
	Listeners []Listener `json:"listeners,omitempty"`
	// Stats change all the time and are not part of Digest.
	Stats *Stats `json:"stats,omitempty"`
	// Conntrack (when asked) changes all the time too and is not part of
	// Digest; nf_conntrack_max, which a step may change, is also read as
	// a sysctl when the plan asks for it.
	Conntrack *Conntrack `json:"conntrack,omitempty"`
	// Networkd (when asked) is systemd-networkd in this host's network
	// namespace and its settings. Not part of Digest: the operator
	// changes them after planning, as plan advises.
	Networkd *Networkd `json:"networkd,omitempty"`
	// WGPublicKey is this host's WireGuard public key for the tunnel,
	// filled by the CLI from the agent's wg-key call (not by facts). Not
	// part of Digest: it is derived from the host's key file, which the
	// link object (public_key) already covers once applied.
	WGPublicKey string `json:"wg_public_key,omitempty"`
	// RouteSrc maps an address to the source address this host uses
	// towards it (`ip route get`, its preferred source), filled by the CLI
	// from the agent's route-get call for the peer's tunnel endpoint: the
	// address a host behind 1:1 NAT binds. Not part of Digest, like
	// WGPublicKey (apply's fresh facts do not carry it; the link object
	// holds the bind once applied).
	RouteSrc map[string]string `json:"route_src,omitempty"`
	// PeerLink is, for a direct tunnel, how this host reaches its peer's
	// endpoint: filled by the CLI from the agent's route-get call with a
	// neighbour probe. Not part of Digest, like RouteSrc.
	PeerLink *PeerLink `json:"peer_link,omitempty"`
	// Boot is whether the host's part survives a reboot: systemd, the
	// boot unit as installed, the last boot restore (agent, boot.go).
	Boot *Boot `json:"boot,omitempty"`
	// StateDir is the space of the agent's state directory: an apply
	// refuses to start where it could not record its steps and their
	// undo (agent/reserve). Not part of Digest: it moves all the time.
	StateDir *StateDirSpace `json:"state_dir,omitempty"`
	// SysctlConf is, for the sysctls the request names, what the host's
	// sysctl files (/etc/sysctl.d and the others systemd-sysctl and
	// `sysctl --system` read) would set when applied again. Not part of
	// Digest: plan only warns of it.
	SysctlConf map[string]SysctlSetting `json:"sysctl_conf,omitempty"`
	// NftConf is where the configuration nftables.service loads
	// (/etc/nftables.conf, /etc/sysconfig/nftables.conf and what they
	// include) declares a table of migrate's name: a saved copy (`nft
	// list ruleset > FILE`) that every boot and restart of the service
	// loads again. Not part of Digest: plan and rollback only warn of it.
	NftConf []NftConfTable `json:"nft_conf,omitempty"`
	// Legacy is the host's legacy x_tables firewall (iptables-legacy:
	// rules nft does not show), when Chains is asked and the namespace
	// has legacy tables. Only its DNAT (LegacyFirewall.DNAT, on which
	// keep_dest depends) is part of Digest: the rest only warns.
	Legacy *LegacyFirewall `json:"legacy,omitempty"`
}

// LegacyFirewall is what plan needs of the legacy x_tables tables in
// the host's network namespace (iptables-legacy, ip6tables-legacy):
// rules there run at the same hooks as nft's chains, but nft does not
// list them.
type LegacyFirewall struct {
	// Tables are the registered tables, as /proc/net/ip_tables_names
	// and ip6_tables_names list them: "ip filter", "ip6 nat".
	Tables []string `json:"tables"`
	// Families has, per family (ip, ip6) with a filter or nat table,
	// what matters of it.
	Families []LegacyFamily `json:"families,omitempty"`
	// Error says why a table could not be read (no iptables-legacy-save
	// on the host, its failure): plan warns that it cannot tell.
	Error string `json:"error,omitempty"`
}

// LegacyFamily is one family's legacy filter FORWARD and nat chains.
type LegacyFamily struct {
	Family string `json:"family"` // ip | ip6
	// ForwardPolicy is filter FORWARD's policy (ACCEPT, DROP), "" without
	// a filter table.
	ForwardPolicy string `json:"forward_policy,omitempty"`
	// ForwardDrops are FORWARD's rules that DROP or REJECT, as
	// iptables-legacy-save prints them (at most MaxLegacyRules).
	ForwardDrops []string `json:"forward_drops,omitempty"`
	// DockerUser: the filter table has Docker's chain DOCKER-USER.
	DockerUser bool `json:"docker_user,omitempty"`
	// Accepts are the ACCEPT rules every forwarded packet meets first:
	// FORWARD's from the top, and DOCKER-USER's from the top where
	// FORWARD jumps there unconditionally, each up to the first rule
	// that is neither (at most MaxLegacyRules), as printed.
	Accepts []string `json:"accepts,omitempty"`
	// RPFilter is the table (raw or mangle, ip6 only) whose PREROUTING
	// drops what fails `-m rpfilter --invert` (firewalld's IPv6_rpfilter
	// on its iptables backend: raw in 0.6, mangle later), "" for none.
	RPFilter string `json:"rpfilter,omitempty"`
	// Ufw: the filter table has ufw's chain ufw-user-input (ufw6- for
	// ip6): ufw runs on the legacy backend.
	Ufw bool `json:"ufw,omitempty"`
	// NAT are nat PREROUTING's and OUTPUT's rules that DNAT, REDIRECT
	// or jump to a chain of the table (Docker's `-j DOCKER`,
	// kube-proxy's KUBE-SERVICES), at most MaxLegacyRules.
	NAT []string `json:"nat,omitempty"`
	// Chains and Rules are the filter table read as FwRules are (table
	// "filter"): INPUT, FORWARD and OUTPUT as base chains with their
	// hook and policy, the others as regular chains (all read), and
	// their rules as far as the agent reads them, within MaxFwRules a
	// chain and MaxFwRulesTotal in all. plan judges them as it does
	// nft's chains, through a view of its own (plan.LegacyView).
	Chains []BaseChain `json:"chains,omitempty"`
	Rules  []FwRule    `json:"rules,omitempty"`
}

// MaxLegacyRules bounds the rules a LegacyFamily lists in each field.
const MaxLegacyRules = 32

// DNAT says whether a legacy nat rule may rewrite the destination of
// the flows arriving at (PREROUTING) or leaving (OUTPUT) the host.
func (l *LegacyFirewall) DNAT() bool {
	if l == nil {
		return false
	}
	for _, f := range l.Families {
		for _, r := range f.NAT {
			if strings.HasPrefix(r, "-A PREROUTING ") {
				return true
			}
		}
	}
	return false
}

// ForwardDrop says whether family's legacy FORWARD drops what no rule
// accepts: policy DROP, or a rule that drops or rejects everything.
func (f LegacyFamily) ForwardDrop() bool {
	if f.ForwardPolicy == "DROP" {
		return true
	}
	for _, r := range f.ForwardDrops {
		if r == "-A FORWARD -j DROP" || strings.HasPrefix(r, "-A FORWARD -j REJECT") {
			return true
		}
	}
	return false
}

// SysctlSetting is the assignment of a sysctl in the host's files that
// systemd-sysctl would apply: the last one naming it, else the last glob
// matching it.
type SysctlSetting struct {
	Value string `json:"value"`
	File  string `json:"file"`
	Line  int    `json:"line"`
	// Pattern is the glob assigned there (net.ipv4.conf.*.rp_filter)
	// when no file names the sysctl itself.
	Pattern string `json:"pattern,omitempty"`
}

// NftConfTable is one declaration of migrate's table in a file
// nftables.service loads.
type NftConfTable struct {
	Family string `json:"family"` // inet or arp
	Name   string `json:"name"`
	File   string `json:"file"`
	Line   int    `json:"line"`
}

// StateDirSpace is agent/reserve's measure of the state directory.
type StateDirSpace struct {
	Dir string `json:"dir"`
	// Free counts the reserve as free; Need is what an apply needs:
	// the reserve, working space and twice the journal and nft record.
	Free    int64 `json:"free"`
	Need    int64 `json:"need"`
	Reserve bool  `json:"reserve"`
}

// Short reports a directory an apply refuses to start in.
func (s StateDirSpace) Short() bool { return s.Free < s.Need }

// Shortfall says what is missing, in the words of the agent's refusal
// and of plan's and status's warning.
func (s StateDirSpace) Shortfall() string {
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	return fmt.Sprintf("the file system of %s has %s free and migrate needs %s there before it changes anything (a reserve, so that an undo or a rollback can always be recorded, and room to record the apply)",
		s.Dir, mib(s.Free), mib(s.Need))
}

// PeerLink is the route from a host to its peer's endpoint and, when the
// route has no gateway, the neighbour entry after a probe.
type PeerLink struct {
	Addr   string `json:"addr"`             // the peer's endpoint
	Dev    string `json:"dev"`              // the device the route leaves by
	Gw     string `json:"gw,omitempty"`     // the route's gateway: none on one link
	Neigh  string `json:"neigh,omitempty"`  // neighbour state after the probe
	LLAddr string `json:"lladdr,omitempty"` // the peer's link-layer address
	// LinkLocal is this host's own IPv6 link-local address on Dev.
	LinkLocal string `json:"link_local,omitempty"`
}

// Answered reports a neighbour entry that the peer answered (or that was
// set by hand): the peer is reachable on the link.
func (p *PeerLink) Answered() bool {
	switch p.Neigh {
	case "reachable", "stale", "delay", "probe", "permanent":
		return true
	}
	return false
}

// BaseChain is a hooked chain of someone else's nft table.
type BaseChain struct {
	Family   string `json:"family"` // ip, ip6, inet, ...
	Table    string `json:"table"`
	Chain    string `json:"chain"`
	Hook     string `json:"hook"` // prerouting, input, forward, output, postrouting
	Priority int    `json:"priority"`
	Policy   string `json:"policy"`         // accept | drop
	Type     string `json:"type,omitempty"` // filter | nat | route; "" for a regular chain
	// Read: a regular chain whose rules the agent read (FwRules) because
	// a chain it read jumps or goes to it.
	Read bool `json:"read,omitempty"`
}

// FwRule is one rule of a foreign firewall chain, as far as the agent
// decodes its expressions: the matches plan compares with migrate's
// traffic (each field empty when the rule does not match on it) and the
// verdict. Opaque says the rule has an expression the agent does not
// decode (an xtables match, a set lookup, a bitwise mask, a limit...)
// that may narrow what it matches: such a rule never counts as allowing
// anything, and may still drop anything its known fields allow.
type FwRule struct {
	Family  string     `json:"family"` // ip | ip6 | inet
	Table   string     `json:"table"`
	Chain   string     `json:"chain"`
	NfProto string     `json:"nfproto,omitempty"` // ipv4 | ipv6 (meta nfproto, in inet tables)
	IifName string     `json:"iifname,omitempty"`
	OifName string     `json:"oifname,omitempty"`
	L4Proto string     `json:"l4proto,omitempty"` // tcp | udp | gre | ... or the number
	Saddr   netip.Addr `json:"saddr,omitzero"`    // exact source address
	Daddr   netip.Addr `json:"daddr,omitzero"`    // exact destination address
	// SaddrNet and DaddrNet: the source (destination) address is in
	// this prefix, shorter than an address (`-s 10.0.0.0/8`, `ip6 daddr
	// ::/96`); at most one of Saddr and SaddrNet is set, and of Daddr
	// and DaddrNet.
	SaddrNet netip.Prefix `json:"saddr_net,omitzero"`
	DaddrNet netip.Prefix `json:"daddr_net,omitzero"`
	// Saddrs and Daddrs: the source (destination) address is in a set
	// the rule looks up (`ip saddr { 203.0.113.20, 10.0.0.0/8 }`, a named
	// set as it is at the reading), as spans From..To; with neither
	// Saddr nor SaddrNet (Daddr, DaddrNet).
	Saddrs [][2]netip.Addr `json:"saddrs,omitempty"`
	Daddrs [][2]netip.Addr `json:"daddrs,omitempty"`
	Dport  uint16          `json:"dport,omitempty"`
	// L4Protos and Dports: the rule matches only packets whose protocol
	// (destination port) is in a set it looks up, as the set holds it
	// (anonymous sets like `tcp dport { 22, 80, 1000-2000 }`, named
	// ones at the time of reading); each port span is From..To.
	L4Protos []string    `json:"l4protos,omitempty"`
	Dports   [][2]uint16 `json:"dports,omitempty"`
	// CtState: the rule matches only packets in one of these conntrack
	// states (nft's `ct state established,related`: invalid,
	// established, related, new, untracked).
	CtState []string `json:"ct_state,omitempty"`
	// Verdict is accept, drop, reject, return, "jump CHAIN", "goto
	// CHAIN", or "" (none: the packet goes on to the next rule).
	Verdict string `json:"verdict,omitempty"`
	Opaque  bool   `json:"opaque,omitempty"`
}

// CtStateBits are the conntrack states by their bit in nft's `ct state`
// (NF_CT_STATE_BIT: 1 << (ctinfo + 1), invalid 1, untracked 64).
var CtStateBits = []struct {
	Name string
	Bit  uint32
}{{"invalid", 1}, {"established", 2}, {"related", 4}, {"new", 8}, {"untracked", 64}}

// CtNatStates are the two states iptables' conntrack match adds to
// those (`--ctstate SNAT,DNAT`: the flow's source or destination was
// rewritten by NAT; nft's `ct status snat,dnat`), which firewalld's
// iptables backend writes (`--ctstate RELATED,ESTABLISHED,DNAT`). A
// rule's CtState may hold them; any one listed state matches.
var CtNatStates = []string{"snat", "dnat"}

// Listener is one listening TCP or bound UDP socket.
type Listener struct {
	Proto   Proto  `json:"proto"` // tcp | udp
	Addr    string `json:"addr"`  // local address; 0.0.0.0 or :: for a wildcard
	Port    uint16 `json:"port"`
	Process string `json:"process,omitempty"` // comm of the owning process
	// V6Only is false for a :: socket that also takes IPv4 (the Linux
	// default).
	V6Only bool `json:"v6only,omitempty"`
}

// Serves reports whether the listener accepts proto traffic to addr:port.
func (l Listener) Serves(proto Proto, addr string, port uint16) bool {
	if l.Proto != proto || l.Port != port {
		return false
	}
	switch l.Addr {
	case addr:
		return true
	case "0.0.0.0":
		return !isV6(addr)
	case "::":
		return isV6(addr) || !l.V6Only
	}
	return false
}

func isV6(a string) bool {
	for i := 0; i < len(a); i++ {
		if a[i] == ':' {
			return true
		}
	}
	return false
}

// Stats are live counters: nft per-service counters and conntrack counts.
type Stats struct {
	// Counters per service key ("addr proto port") from migrate's table.
	Counters map[string]Counter `json:"counters,omitempty"`
	// UnderlayDropped counts forged encapsulated packets dropped.
	UnderlayDropped Counter `json:"underlay_dropped"`
	// Flows per requested service key.
	Flows map[string]FlowCount `json:"flows,omitempty"`
}

// Counter is an nft counter.
type Counter struct {
	NewFlows uint64 `json:"new_flows,omitempty"` // new flows sent to NEW
	Packets  uint64 `json:"packets"`
	Bytes    uint64 `json:"bytes"`
}

// FlowCount is what conntrack holds for one service.
type FlowCount struct {
	Total       int `json:"total"`       // all entries to the service
	Established int `json:"established"` // TCP established (UDP: assured)
	ToNew       int `json:"to_new"`      // entries carrying the mark: going to NEW
	// OnOld are the established flows served by OLD itself (no mark):
	// what has yet to drain before OLD may stop serving the service.
	OnOld int `json:"on_old"`
	// Sockets (only when FactsRequest.Sockets) are the host's own
	// sockets whose local address and port are the service's and that
	// still carry a connection: TCP in ESTABLISHED, SYN-RECV, CLOSE-WAIT
	// or FIN-WAIT-1; UDP sockets that are connected. An unconnected UDP
	// server socket is not a connection and is not counted.
	Sockets int `json:"sockets,omitempty"`
	// SocketsOnly are those of Sockets that OnOld does not hold (no
	// established unmarked conntrack entry with the same addresses and
	// ports): connections idle since before conntrack ran here, or
	// closing. OnOld+SocketsOnly is every connection the host serves.
	SocketsOnly int `json:"sockets_only,omitempty"`
}

// Serving is every connection the host itself serves for the key: the
// established unmarked conntrack entries and the sockets conntrack does
// not hold, each counted once.
func (c FlowCount) Serving() int { return c.OnOld + c.SocketsOnly }

// ConntrackMax is the sysctl that limits a network namespace's conntrack
// table. Outside the initial namespace the kernel shows the global value
// read-only (Linux 6.1 to 6.18 at least).
const ConntrackMax = "net.netfilter.nf_conntrack_max"

// UDPWarmup is how long OLD's first table tracks flows before it moves
// UDP services, where nothing tracked flows before (agent/kernel warmUDP):
// a UDP session that sends within it stays with OLD.
const UDPWarmup = 3 * time.Second

// Conntrack is how full the host's conntrack table is and what the host
// would track: its sockets, from /proc/net/sockstat and sockstat6.
type Conntrack struct {
	// Loaded is false when the kernel has no conntrack in this namespace
	// yet (module not loaded: /proc/sys/net/netfilter/nf_conntrack_* are
	// absent). Count is then 0 and Max and Buckets are unknown (0).
	Loaded bool  `json:"loaded"`
	Count  int64 `json:"count"`
	// Max is nf_conntrack_max; 0 (when Loaded) means no limit.
	Max     int64 `json:"max"`
	Buckets int64 `json:"buckets"`
	// MaxWritable: this namespace may write nf_conntrack_max (the initial
	// namespace, /proc/sys writable). Elsewhere the limit is global.
	MaxWritable bool `json:"max_writable"`
	// Sockets the host holds now, IPv4 and IPv6: TCP in use (every state
	// but TIME_WAIT), TCP TIME_WAIT, UDP in use.
	TCPInUse    int64 `json:"tcp_inuse"`
	TCPTimeWait int64 `json:"tcp_tw"`
	UDPInUse    int64 `json:"udp_inuse"`
}

// Networkd is systemd-networkd as the agent finds it (Facts.Networkd).
// networkd removes routing policy rules and routes it did not make when
// it starts and when it configures a link, unless networkd.conf sets
// ManageForeignRoutingPolicyRules=no and ManageForeignRoutes=no.
type Networkd struct {
	// Running: a systemd-networkd process runs in the agent's network
	// namespace (one in another namespace does not count). The rest is
	// set only when it runs.
	Running bool `json:"running"`
	PID     int  `json:"pid,omitempty"`
	// ForeignRules and ForeignRoutes are the effective
	// ManageForeignRoutingPolicyRules= and ManageForeignRoutes= (default
	// yes), read through the process's own root.
	ForeignRules  bool `json:"manage_foreign_rules"`
	ForeignRoutes bool `json:"manage_foreign_routes"`
	// Files are the configuration files read, in the order applied.
	Files []string `json:"files,omitempty"`
	// Problems are what could not be read or parsed ("FILE:LINE: ...");
	// a value not understood counts as the default, yes.
	Problems []string `json:"problems,omitempty"`
}

// Bounds of a Networkd report.
const (
	MaxNetworkdFiles    = 256
	MaxNetworkdProblems = 64
)

// Digest hashes the facts, so a saved plan can be checked for staleness.
func (f Facts) Digest() string {
	f.Stats, f.Listeners, f.WGPublicKey, f.Conntrack, f.RouteSrc, f.PeerLink = nil, nil, "", nil, nil, nil
	f.FwRules, f.RPFilter6, f.Networkd, f.StateDir, f.SysctlConf, f.NftConf = nil, nil, nil, nil, nil, nil
	legacyDNAT := f.Legacy.DNAT()
	f.Legacy = nil
	b, _ := json.Marshal(f)
	if legacyDNAT {
		// keep_dest depends on it; hosts without legacy tables keep
		// the digest they had.
		b = append(b, " legacy-dnat"...)
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:12])
}

// Link is the device of that name, if there is one.
func (f Facts) Link(name string) (Link, bool) {
	for _, l := range f.Links {
		if l.Name == name {
			return l, true
		}
	}
	return Link{}, false
}

// HasLink reports whether a device of that name exists.
func (f Facts) HasLink(name string) bool {
	_, ok := f.Link(name)
	return ok
}

// HasAddr reports whether any device holds ip.
func (f Facts) HasAddr(ip netip.Addr) bool {
	for _, a := range f.Addrs {
		if a.CIDR.Addr() == ip {
			return true
		}
	}
	return false
}
