package plan

import (
	"fmt"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// Current maps every object the facts show to its key.
func Current(f state.Facts) map[string]state.Object {
	m := map[string]state.Object{}
	put := func(o state.Object) { m[o.Key()] = o }
	for i := range f.Links {
		put(state.Object{Link: &f.Links[i]})
	}
	for i := range f.Addrs {
		put(state.Object{Addr: &f.Addrs[i]})
	}
	for i := range f.Rules {
		put(state.Object{Rule: &f.Rules[i]})
	}
	for i := range f.Routes {
		put(state.Object{Route: &f.Routes[i]})
	}
	for name, v := range f.Sysctls {
		put(state.Object{Sysctl: &state.Sysctl{Name: name, Value: v}})
	}
	if f.Nft != nil {
		put(state.Object{Nft: f.Nft})
	}
	if f.Boot != nil {
		for i := range f.Boot.Files {
			put(state.Object{File: &f.Boot.Files[i]})
		}
	}
	return m
}

// taggedByMigrate reports objects that carry migrate's mark of ownership
// even when the journal does not list them (a lost state file).
func taggedByMigrate(o state.Object) bool {
	switch {
	case o.Rule != nil:
		return o.Rule.Protocol == RouteProto
	case o.Route != nil:
		return o.Route.Protocol == RouteProto
	case o.Nft != nil:
		return o.Nft.Name == NftTableName
	case o.File != nil:
		return true // only the boot unit's paths are read
	}
	return false
}

// Diff computes the steps that take host from facts to desired. owned maps
// the keys migrate changed earlier (from the journal) to their value before
// migrate's first change; an owned key that is no longer desired is
// restored to that value (deleted when migrate created it).
//
// Steps are ordered: creates and updates by kind (links first, nft last),
// then deletes in reverse kind order. The default local rule, when it has
// to go, is deleted right after the rule creates: after its replacement
// exists, before any address becomes local.
func Diff(host string, want HostDesired, f state.Facts, owned map[string]*state.Object) ([]state.Step, error) {
	cur := Current(f)
	desired := map[string]bool{}
	var up, down []state.Step
	for _, d := range want.Objects {
		d := d
		k := d.Key()
		if desired[k] {
			return nil, fmt.Errorf("internal: desired state of host %s lists %s twice", host, k)
		}
		desired[k] = true
		c, exists := cur[k]
		drifted := d.Nft != nil && f.NftDrift != ""
		switch {
		case !exists:
			up = append(up, state.Step{Host: host, Action: state.Create, After: &d})
		case drifted && unrecordedNft(c.Nft, owned, k):
			// A table of migrate's name that neither the agent's record
			// nor the journal knows of: a saved copy (`nft list ruleset
			// > /etc/nftables.conf`) that nftables.service loaded after
			// a rollback. Written as a create, so that the rollback of
			// this apply removes the table instead of keeping the one it
			// wrote; the copy cannot be restored anyway.
			up = append(up, state.Step{Host: host, Action: state.Create, After: &d})
		case drifted:
			// Edited by hand: rewrite it whatever the agent's record
			// says. Before is what migrate last wrote (the agent's
			// record), or, without a record, the desired table itself:
			// the hand edit cannot be restored, only replaced.
			c := c
			if c.Nft.Spec.Role == "" {
				c = d
			}
			up = append(up, state.Step{Host: host, Action: state.Update, Before: &c, After: &d})
		case !c.Equal(d):
			if d.Link != nil {
				if _, ours := owned[k]; !ours {
					return nil, fmt.Errorf("host %s: a device named %q already exists and migrate did not create it; set tunnel.name to a free name", host, d.Link.Name)
				}
			}
			c := c
			before := &c
			if mid := underlayFirst(c, d); mid != nil {
				// A new underlay filter and more: the filter on its
				// own first, before the tunnel check (UnderlayOnly);
				// the rest after it.
				up = append(up, state.Step{Host: host, Action: state.Update, Before: &c, After: mid})
				before = mid
			}
			up = append(up, state.Step{Host: host, Action: state.Update, Before: before, After: &d})
		}
	}

	scope := map[string]bool{}
	unwanted := map[string]bool{}
	for _, k := range want.Unwanted {
		unwanted[k] = true
	}
	for k := range owned {
		scope[k] = true
	}
	for _, k := range want.Unwanted {
		scope[k] = true
	}
	for k, o := range cur {
		if taggedByMigrate(o) {
			scope[k] = true
		}
	}
	for k := range scope {
		if desired[k] {
			continue
		}
		c, exists := cur[k]
		if !exists {
			// Migrate removed something that was there before it (the
			// default local rule): put it back.
			if prior := owned[k]; prior != nil && !unwanted[k] {
				p := *prior
				up = append(up, state.Step{Host: host, Action: state.Create, After: &p})
			}
			continue
		}
		c2 := c
		if prior := owned[k]; prior != nil && !unwanted[k] {
			if !prior.Equal(c) {
				p := *prior
				up = append(up, state.Step{Host: host, Action: state.Update, Before: &c2, After: &p})
			}
			continue
		}
		del := state.Step{Host: host, Action: state.Delete, Before: &c2}
		if unwanted[k] {
			// The default local rule goes as soon as its replacement
			// exists, before NEW's migrated address becomes local: so
			// NEW's own traffic to that address never loops back.
			up = append(up, del)
			continue
		}
		down = append(down, del)
	}

	sort.SliceStable(up, func(i, j int) bool { return less(up[i], up[j]) })
	sort.SliceStable(down, func(i, j int) bool { return less(down[j], down[i]) })
	return append(up, down...), nil
}

// unrecordedNft says that a live table of migrate's name (key k) is known
// to neither the agent's record (no spec: migrate did not write it there)
// nor the journal (no step): a saved copy loaded again, or one made by
// hand.
func unrecordedNft(live *state.NftTable, owned map[string]*state.Object, k string) bool {
	_, journaled := owned[k]
	return live.Spec.Role == "" && !journaled
}

func less(a, b state.Step) bool {
	// Set before any link: a WireGuard link going up changes it.
	if pa, pb := beforeLinks(a), beforeLinks(b); pa != pb {
		return pa
	}
	ka, kb := sortKind(a), sortKind(b)
	if ka != kb {
		return ka < kb
	}
	if da, db := a.Action == state.Delete, b.Action == state.Delete; da != db {
		return db
	}
	// Forwarding switches go last among sysctls: IPv6 forwarding=1
	// silently stops RA acceptance where accept_ra is 1, so accept_ra=2
	// must already be in place.
	if fa, fb := isForwarding(a), isForwarding(b); fa != fb {
		return fb
	}
	return a.Key() < b.Key()
}

// sortKind is the kind s sorts with: its object's, except that an nft
// update that changes only the underlay filter goes with the links (after
// them: "link" < "nft"), before any address, route or the tunnel check.
func sortKind(s state.Step) state.Kind {
	if UnderlayOnly(s) {
		return state.KindLink
	}
	return s.Object().Kind()
}

// UnderlayOnly reports an update of the nft table that changes its
// underlay filter and nothing else: a tunnel endpoint changed. It sends no
// flow anywhere new, and the tunnel check after the new devices needs it:
// when NEW's endpoint changed, OLD's old filter drops every tunnel packet
// from NEW's new address, the check's too. So it goes right after the
// links, and apply runs it before the check.
func UnderlayOnly(s state.Step) bool {
	if s.Action != state.Update || s.Before == nil || s.After == nil || s.Before.Nft == nil || s.After.Nft == nil {
		return false
	}
	b, a := *s.Before.Nft, *s.After.Nft
	if sameUnderlay(b.Spec.Underlay, a.Spec.Underlay) {
		return false
	}
	b.Spec.Underlay, a.Spec.Underlay = nil, nil
	return state.Object{Nft: &b}.Equal(state.Object{Nft: &a})
}

// underlayFirst is the table between cur and want when want changes the
// underlay filter and more: cur with want's filter. Nil when the filter
// stays, or when it is all that changes.
func underlayFirst(cur, want state.Object) *state.Object {
	if cur.Nft == nil || want.Nft == nil || sameUnderlay(cur.Nft.Spec.Underlay, want.Nft.Spec.Underlay) {
		return nil
	}
	mid := *cur.Nft
	mid.Spec.Underlay = want.Nft.Spec.Underlay
	o := state.Object{Nft: &mid}
	if o.Equal(want) {
		return nil
	}
	return &o
}

func sameUnderlay(a, b *state.NftUnderlay) bool {
	return a == b || a != nil && b != nil && *a == *b
}

// beforeLinks reports a create or update of SendRedirectsAll.
func beforeLinks(s state.Step) bool {
	o := s.Object()
	return s.Action != state.Delete && o.Sysctl != nil && o.Sysctl.Name == SendRedirectsAll
}

func isForwarding(s state.Step) bool {
	o := s.Object()
	return o.Sysctl != nil && (o.Sysctl.Name == "net.ipv4.ip_forward" || strings.HasSuffix(o.Sysctl.Name, ".forwarding"))
}
