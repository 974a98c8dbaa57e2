package agent

// Ownership. validate.go checks that a step is well formed; this file
// checks that it only touches what is migrate's. Every step goes through
// checkOwned before it reaches the Kernel, whoever sends it: an apply or
// rollback request (dispatch), or the revert timer replaying the host
// journal (RunWatchdog). A forged or corrupted state file, saved plan or
// journal can therefore only name objects of migrate's shape, and a
// destructive step only proceeds when the live object is the one the step
// says it is.
//
// What is migrate's (plan/desired.go makes exactly these):
//   - nft: the table named "migrate" (plan.NftTableName; not configurable,
//     so the name is reserved), family inet (the arp table of the same
//     name goes with it).
//   - links: devices of the kinds migrate makes (vxlan, gre, ip6gre,
//     wireguard). Before a delete or update, the live device of that name
//     must be of that kind and have the identity the step records (see
//     sameTunnel); a device that is absent is fine (deletes are no-ops).
//   - rules: protocol 77 (plan.RouteProto), looking up a table in
//     migrate's range, or main for the "to ADDR iif lo" shape, or local
//     for the moved local rule (no selector, preference above 0). The one
//     foreign rule migrate touches is the kernel's own local rule
//     (pref 0, lookup local, no selector, protocol kernel), which the
//     local-rule move deletes and rollback creates again; it is only
//     deleted while migrate's moved local rule of that family is live.
//   - routes: protocol 77, in a table of migrate's range.
//   - addresses: on lo, host prefixes (/32, /128) that are not loopback
//     addresses; elsewhere only on a device of a tunnel kind.
//   - sysctls: the allow-list below, with integer values.
//   - files: only the boot unit and its enable link in the unit
//     directory (bootunit.go), and a step only ever writes the exact unit
//     text migrate makes, running this agent or one the CLI installed in
//     the state directory; before a destructive step the file there must
//     be one the step records.
//
// migrate's range of routing tables is what config accepts for
// tunnel.table: 1..2147483647 except 253 (default), 254 (main) and 255
// (local). The agent does not know the configured table, so any table in
// that range counts; the protocol is what marks a rule or route as
// migrate's.
//
// Before a destructive step (delete or update) the agent compares the
// step's before value with the live object, and refuses when the live
// object is not the one migrate recorded. It compares identity, not every
// value, so that apply can still repair drift:
//   - a link: same kind and same tunnel identity (endpoints, VNI, port,
//     GRE key; WireGuard: this host's public key, which derives from the
//     private key only migrate's agent holds). MTU and up/down may differ.
//   - a rule: the selector is the key; the live rule with that selector
//     must carry the step's protocol (77, or kernel for the local rule). A
//     rule re-added by hand with `ip rule add` has protocol 0 and is no
//     longer migrate's.
//   - a route: no live route to the same destination in that table may
//     carry another protocol (a create or update replaces it in the kernel,
//     a delete would not be migrate's).
//   - a sysctl: its name is its identity; a value changed by hand is still
//     the same sysctl and is restored. A per-device sysctl
//     (net.ipv4.conf.DEV.*) needs DEV to be a tunnel-kind device; an
//     accept_ra is only changed between 1 and 2, and only where it is 1 or
//     2 now.
//   - for an update, the live object may match the step's before or its
//     after value: a step the agent journalled but did not finish
//     (write-ahead) is undone with its after value already or not yet in
//     place.
//
// Facts (reads) stay broader than steps: a facts request may read any
// net.ipv4.*/net.ipv6.* sysctl (net.ipv6.conf.*.accept_ra is read across
// all devices), any routing table and any nft table name. They change
// nothing.

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// Marks of ownership; they must match package plan (owner_test.go checks).
const (
	ownProto    = 77        // plan.RouteProto
	ownNftTable = "migrate" // plan.NftTableName
	// maxOwnTable is the largest table config accepts for tunnel.table.
	maxOwnTable = 1<<31 - 1
)

// ownTable reports whether t is in migrate's range of routing tables.
func ownTable(t int) bool {
	return t >= 1 && t <= maxOwnTable && (t < 253 || t > 255)
}

// conntrackMax is the conntrack limit apply may raise on OLD
// (state.ConntrackMax on branch conntrack).
const conntrackMax = "net.netfilter.nf_conntrack_max"

// ownSysctls are the sysctls migrate sets (plan/desired.go, plan's
// conntrack capacity step). Per-device ones are matched by ownSysctl.
var ownSysctls = map[string]bool{
	"net.ipv4.ip_forward":          true, // OLD; a host with an IPv4 forward
	"net.ipv4.ip_early_demux":      true, // OLD (plan.EarlyDemux)
	"net.ipv6.conf.all.forwarding": true, // OLD with IPv6 services; a host with an IPv6 forward
	conntrackMax:                   true, // OLD when its conntrack table is too small
}

// sysctlRange is the values the kernel gives a boolean or tri-state
// sysctl of the allow-list, as the digits allowed ("" for any integer).
func sysctlRange(name string) string {
	if _, _, leaf, ok := sysctlConfDev(name); ok {
		switch leaf {
		case "rp_filter", "arp_announce":
			return "012"
		case "accept_ra":
			return "012"
		}
		return "01"
	}
	if name == conntrackMax {
		return ""
	}
	return "01"
}

// sysctlConfDev splits net.ipvX.conf.DEV.NAME into DEV (as a device name,
// "/" read as ".") and NAME.
func sysctlConfDev(name string) (fam, dev, leaf string, ok bool) {
	parts := strings.Split(name, ".")
	if len(parts) != 5 || parts[0] != "net" || parts[2] != "conf" {
		return "", "", "", false
	}
	return parts[1], strings.ReplaceAll(parts[3], "/", "."), parts[4], true
}

// ownSysctl checks a sysctl name against the allow-list. tunnelDev is set
// when the name is a per-device one that needs a tunnel-kind device.
func ownSysctl(name string) (tunnelDev string, err error) {
	if ownSysctls[name] {
		return "", nil
	}
	if fam, dev, leaf, ok := sysctlConfDev(name); ok {
		switch {
		case fam == "ipv4" && (leaf == "rp_filter" || leaf == "accept_local") && dev != "all" && dev != "default" && dev != "lo":
			// The tunnel device's (OLD: accept_local, rp_filter;
			// NEW: rp_filter), or a direct tunnel's segment interface.
			return dev, nil
		case fam == "ipv4" && leaf == "send_redirects" && dev == "all":
			// A direct tunnel's OLD: the kernel sends redirects when
			// all or the interface says so.
			return "", nil
		case fam == "ipv4" && (leaf == "send_redirects" || leaf == "arp_announce") && dev != "all" && dev != "default" && dev != "lo":
			// A direct tunnel's segment interface (OLD: send_redirects,
			// NEW: arp_announce).
			return dev, nil
		case fam == "ipv6" && leaf == "accept_ra" && dev != "all" && dev != "default" && dev != "lo":
			// OLD raises accept_ra 1 -> 2 where it accepted router
			// advertisements, before forwarding=1.
			return "", nil
		}
	}
	return "", fmt.Errorf("sysctl %s is not one migrate sets (allowed: net.ipv4.ip_forward, net.ipv4.ip_early_demux, net.ipv6.conf.all.forwarding, %s, net.ipv4.conf.TUNNEL.rp_filter, net.ipv4.conf.TUNNEL.accept_local, net.ipv6.conf.DEV.accept_ra; for a direct tunnel's segment interface SEG: net.ipv4.conf.{all,SEG}.send_redirects, net.ipv4.conf.SEG.{rp_filter,accept_local,arp_announce})", show(name), conntrackMax)
}

// segmentSysctlValue is the value a direct tunnel sets on its segment's
// interface, by sysctl leaf (plan/direct.go).
var segmentSysctlValue = map[string]string{"rp_filter": "2", "accept_local": "1", "send_redirects": "0", "arp_announce": "2"}

// segmentStep reports a per-device sysctl step a direct tunnel makes on
// an interface that is not a tunnel migrate made (the segment's): only
// an update to the value it sets, or back from it (a rollback), or to the
// value it has. A
// physical interface's sysctl always exists, so a create is never one.
func segmentStep(s state.Step) bool {
	if s.Action != state.Update || s.Before == nil || s.After == nil || s.Before.Sysctl == nil || s.After.Sysctl == nil {
		return false
	}
	_, _, leaf, ok := sysctlConfDev(s.After.Sysctl.Name)
	v, known := segmentSysctlValue[leaf]
	b, a := s.Before.Sysctl.Value, s.After.Sysctl.Value
	// b == a: a rollback's undo of a value already restored writes
	// what is there.
	return ok && known && s.Before.Sysctl.Name == s.After.Sysctl.Name && (b == v || a == v || b == a)
}

// checkOwned checks that step is well formed and only touches what is
// migrate's, statically and against the live kernel. It is the gate every
// step passes before Kernel.Apply.
func checkOwned(k Kernel, s state.Step) error {
	if err := validateStep(s); err != nil {
		return err
	}
	if err := checkOwnedStep(s); err != nil {
		return err
	}
	return checkLive(k, s)
}

// checkOwnedStep is the static part: the objects of the step have the
// shape of migrate's own.
func checkOwnedStep(s state.Step) error {
	for _, o := range []*state.Object{s.Before, s.After} {
		if o == nil {
			continue
		}
		if err := checkOwnedObject(*o); err != nil {
			return fmt.Errorf("refused: %s: %w", o.Key(), err)
		}
	}
	if s.Action != state.Delete && s.After.Sysctl != nil {
		if _, dev, leaf, ok := sysctlConfDev(s.After.Sysctl.Name); ok && leaf == "accept_ra" && dev != "" {
			// migrate raises 1 to 2 and restores 1, nothing else.
			if v := s.After.Sysctl.Value; v != "1" && v != "2" {
				return fmt.Errorf("refused: sysctl %s = %s: migrate only sets accept_ra to 2 (and restores 1)", s.After.Sysctl.Name, show(v))
			}
		}
	}
	if s.Action != state.Delete && s.After.File != nil && s.After.File.Link == "" {
		if err := checkUnitText(s.After.File.Path, s.After.File.Content); err != nil {
			return fmt.Errorf("refused: %s: %w", s.After.Key(), err)
		}
	}
	return nil
}

func checkOwnedObject(o state.Object) error {
	switch {
	case o.File != nil:
		return checkOwnedFile(*o.File)
	case o.Nft != nil:
		if o.Nft.Family != "inet" || o.Nft.Name != ownNftTable {
			return fmt.Errorf("nft table %s %s is not migrate's (only table inet %s)", show(o.Nft.Family), show(o.Nft.Name), ownNftTable)
		}
	case o.Link != nil:
		if !o.Link.Type.IsLink() {
			return fmt.Errorf("link type %s: migrate only makes vxlan, gre, ip6gre and wireguard links", show(string(o.Link.Type)))
		}
	case o.Sysctl != nil:
		if _, err := ownSysctl(o.Sysctl.Name); err != nil {
			return err
		}
		if _, err := strconv.ParseInt(o.Sysctl.Value, 10, 64); err != nil {
			return fmt.Errorf("sysctl %s value %s: must be an integer (every sysctl migrate sets is one)", o.Sysctl.Name, show(o.Sysctl.Value))
		}
		if r := sysctlRange(o.Sysctl.Name); r != "" && !strings.Contains(r, o.Sysctl.Value) || len(o.Sysctl.Value) != 1 && r != "" {
			return fmt.Errorf("sysctl %s value %s: must be one of %s", o.Sysctl.Name, show(o.Sysctl.Value), r)
		}
	case o.Rule != nil:
		return checkOwnedRule(*o.Rule)
	case o.Route != nil:
		r := o.Route
		if r.Protocol != ownProto {
			return fmt.Errorf("route protocol %d: migrate's routes carry protocol %d", r.Protocol, ownProto)
		}
		if !ownTable(r.Table) {
			return fmt.Errorf("route table %s: migrate's tables are 1..%d except 253, 254 (main) and 255 (local)", state.TableName(r.Table), maxOwnTable)
		}
	case o.Addr != nil:
		if o.Addr.Dev == "lo" {
			p := o.Addr.CIDR
			if p.Bits() != p.Addr().BitLen() || p.Addr().IsLoopback() || p.Addr().IsUnspecified() || p.Addr().IsLinkLocalUnicast() || p.Addr().IsMulticast() {
				return fmt.Errorf("address %s on lo: migrate only adds service addresses there (a /32 or /128 that is not loopback, link-local or multicast)", o.Addr.CIDR)
			}
		}
	}
	return nil
}

// defaultLocalRule reports the default local rule: pref 0, from all,
// lookup local, as the kernel makes it (protocol kernel) or as an admin
// puts it back by hand (`ip rule add pref 0 lookup local`: protocol 0, or
// whatever -p says). It is the one rule migrate moves that is not its own;
// refusing the hand-made copy left such a host where neither apply (to
// repair: that rule sends the moved services' packets to OLD's own stack)
// nor rollback could touch it.
func defaultLocalRule(r state.Rule) bool {
	return r.Priority == 0 && r.Table == state.TableLocal && r.Protocol != ownProto && r.Bare()
}

func checkOwnedRule(r state.Rule) error {
	if defaultLocalRule(r) {
		return nil
	}
	if r.Protocol != ownProto {
		return fmt.Errorf("rule protocol %d: migrate's rules carry protocol %d (the only other rule migrate moves is the default pref 0 lookup local)", r.Protocol, ownProto)
	}
	switch {
	case ownTable(r.Table):
		return nil
	case r.Table == state.TableLocal && r.Bare() && r.Priority > 0:
		return nil // the moved local rule
	case r.Table == state.TableMain && r.Dst.IsValid() && r.IifName == "lo" && !r.Src.IsValid() && r.Mask == 0:
		if p := r.Dst; p.Bits() == p.Addr().BitLen() {
			return nil // NEW: to ADDR iif lo lookup main
		}
	}
	return fmt.Errorf("rule lookup %s: migrate's rules look up a table in 1..%d except 253-255, main only for \"to ADDR iif lo\", local only for the moved local rule", state.TableName(r.Table), maxOwnTable)
}

// checkLive compares the step with the live kernel (Kernel.Facts).
func checkLive(k Kernel, s state.Step) error {
	o := s.Object()
	var req state.FactsRequest
	switch {
	case o.Nft != nil:
		return nil // the name is reserved: table inet migrate is migrate's
	case o.File != nil:
		if err := liveFileOwned(s); err != nil {
			return fmt.Errorf("refused: %s: %w", o.Key(), err)
		}
		return nil
	case o.Route != nil:
		req.Tables = []int{o.Route.Table}
	case o.Sysctl != nil:
		req.Sysctls = []string{o.Sysctl.Name}
	}
	f, err := k.Facts(req)
	if err != nil {
		return fmt.Errorf("read the live state to check ownership: %w", err)
	}
	if err := liveOwned(f, s); err != nil {
		return fmt.Errorf("refused: %s: %w", o.Key(), err)
	}
	return nil
}

func liveLink(f state.Facts, name string) *state.Link {
	for i := range f.Links {
		if f.Links[i].Name == name {
			return &f.Links[i]
		}
	}
	return nil
}

// movedLocalRule reports migrate's moved local rule in the live rules.
func movedLocalRule(f state.Facts, family int) bool {
	for _, r := range f.Rules {
		if r.Family == family && movedLocal(r) {
			return true
		}
	}
	return false
}

// movedLocal reports migrate's moved local rule.
func movedLocal(r state.Rule) bool {
	return r.Table == state.TableLocal && r.Protocol == ownProto && r.Priority > 0 && r.Bare()
}

// localRules counts the live rules of family that look up the local table
// for every packet.
func localRules(f state.Facts, family int) int {
	n := 0
	for _, r := range f.Rules {
		if r.Family == family && r.Table == state.TableLocal && r.Bare() {
			n++
		}
	}
	return n
}

// needTunnelDev checks that a device, when it exists, is of a tunnel kind.
func needTunnelDev(f state.Facts, dev, what string) error {
	if l := liveLink(f, dev); l != nil && !l.Type.IsLink() {
		return fmt.Errorf("%s: device %s is a %s, not a tunnel migrate made", what, dev, l.Type)
	}
	return nil
}

// sameTunnel reports whether the live link is the tunnel w describes:
// same kind and identity; MTU and up may differ. WireGuard's endpoint and
// peer are reconfigured in place, its own public key is the identity.
func sameTunnel(live, w state.Link) bool {
	if live.Type != w.Type {
		return false
	}
	if w.Type == state.WireGuard {
		return live.PublicKey == w.PublicKey
	}
	return live.Local == w.Local && live.Remote == w.Remote && live.VNI == w.VNI && live.Port == w.Port && live.Key == w.Key
}

// versions are the objects a destructive step may find live: its before
// value, and for an update its after value too.
func versions(s state.Step) []state.Object {
	if s.Action == state.Create {
		return nil
	}
	out := []state.Object{*s.Before}
	if s.Action == state.Update {
		out = append(out, *s.After)
	}
	return out
}

func liveOwned(f state.Facts, s state.Step) error {
	o := s.Object()
	switch {
	case o.Link != nil:
		if s.Action == state.Create {
			return nil // the kernel code refuses to create over a different link
		}
		live := liveLink(f, s.Before.Link.Name)
		if live == nil {
			return nil
		}
		for _, v := range versions(s) {
			if sameTunnel(*live, *v.Link) {
				return nil
			}
		}
		return fmt.Errorf("the live device is %s, not the link the step records (%s)", live, s.Before.Link)
	case o.Sysctl != nil:
		if dev, _ := ownSysctl(o.Sysctl.Name); dev != "" {
			if err := needTunnelDev(f, dev, "sysctl "+o.Sysctl.Name); err != nil && !segmentStep(s) {
				return err
			}
		}
		if _, _, leaf, ok := sysctlConfDev(o.Sysctl.Name); ok && leaf == "accept_ra" {
			// migrate raises 1 to 2 and restores 1: an interface whose
			// accept_ra is anything else is not one it touched.
			if v, ok := f.Sysctls[o.Sysctl.Name]; ok && v != "1" && v != "2" {
				return fmt.Errorf("accept_ra is %s: migrate only changes it between 1 and 2", show(v))
			}
		}
	case o.Addr != nil:
		if o.Addr.Dev != "lo" {
			return needTunnelDev(f, o.Addr.Dev, "address "+o.Addr.CIDR.String())
		}
	case o.Rule != nil:
		if s.Action == state.Create {
			return nil
		}
		if s.Action == state.Delete && defaultLocalRule(*s.Before.Rule) && !movedLocalRule(f, o.Rule.Family) {
			// The move adds the new rule before the old one goes:
			// without it, the host would deliver nothing locally.
			return fmt.Errorf("the kernel's local rule is only removed once migrate's moved local rule (lookup local, protocol %d) is in place, and there is none for IPv%d", ownProto, o.Rule.Family)
		}
		if s.Action == state.Delete && movedLocal(*s.Before.Rule) && localRules(f, o.Rule.Family) <= 1 {
			// The reverse: the moved rule goes only once another local
			// rule (rollback puts the default one back first) is there.
			return fmt.Errorf("migrate's moved local rule is only removed once another rule looks up the local table for IPv%d (rollback puts the default pref 0 back first): without one, the host would deliver nothing locally", o.Rule.Family)
		}
		key := o.Key()
		var found []state.Rule
		for _, r := range f.Rules {
			if (state.Object{Rule: &r}).Key() == key {
				found = append(found, r)
			}
		}
		if len(found) == 0 {
			return nil
		}
		for _, r := range found {
			for _, v := range versions(s) {
				if r.Protocol == v.Rule.Protocol {
					return nil
				}
			}
		}
		return fmt.Errorf("the live rule carries protocol %d, not %d: it is not the rule migrate recorded", found[0].Protocol, s.Before.Rule.Protocol)
	case o.Route != nil:
		var keys []state.Route
		for _, v := range append(versions(s), o) {
			keys = append(keys, *v.Route)
		}
		for _, r := range f.Routes {
			for _, k := range keys {
				if r.Family == k.Family && r.Table == k.Table && r.Dst == k.Dst && r.Protocol != ownProto {
					return fmt.Errorf("table %s holds %s with protocol %d: not migrate's route", state.TableName(r.Table), r, r.Protocol)
				}
			}
		}
	}
	return nil
}
