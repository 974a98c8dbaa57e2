package kernel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func (h *Host) ruleFacts() ([]state.Rule, error) {
	var out []state.Rule
	for _, af := range []int{unix.AF_INET, unix.AF_INET6} {
		rules, err := retryDump("list rules", func() ([]netlink.Rule, error) {
			return h.nl.RuleListFiltered(af, nil, 0)
		})
		if err != nil {
			return nil, fmt.Errorf("list v%d rules: %w", familyOf(af), err)
		}
		for _, r := range rules {
			out = append(out, ruleFacts(af, r))
		}
	}
	// The kernel dumps in evaluation order; a stable sort keeps the order
	// of rules that share a preference.
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Family != out[j].Family {
			return out[i].Family < out[j].Family
		}
		return out[i].Priority < out[j].Priority
	})
	return out, nil
}

func ruleFacts(af int, r netlink.Rule) state.Rule {
	out := state.Rule{
		Family:   familyOf(af),
		Priority: r.Priority,
		IifName:  r.IifName,
		Table:    r.Table,
		Protocol: r.Protocol,
	}
	if r.Src != nil && r.Src.IP != nil {
		out.Src = prefixOf(r.Src)
	}
	if r.Dst != nil && r.Dst.IP != nil {
		out.Dst = prefixOf(r.Dst)
	}
	// The kernel reports FRA_FWMASK whenever mark or mask is non-zero;
	// Mask 0 means "no fwmark match".
	if r.Mask != nil {
		out.Mark, out.Mask = r.Mark, *r.Mask
	} else if r.Mark != 0 {
		out.Mark, out.Mask = r.Mark, 0xffffffff
	}
	return out
}

// ipNet is a prefix as netlink takes it: the network (masked), IPv4 in 4
// bytes; nil for none.
func ipNet(p netip.Prefix, fam int) (*net.IPNet, error) {
	if !p.IsValid() {
		return nil, nil
	}
	if p.Addr().Is4() != (fam == 4) {
		return nil, fmt.Errorf("%s is not an IPv%d prefix", p, fam)
	}
	p = p.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, nil
}

// prefixOf is a prefix netlink reported (IPv4 in either form; ::/0 and
// 0.0.0.0/0 too).
func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

// buildRule turns a state.Rule into a netlink rule with the same full
// selector. It starts from NewRule: a zero Rule{} would mean priority 0.
func buildRule(r state.Rule) (*netlink.Rule, error) {
	af, err := family(r.Family)
	if err != nil {
		return nil, err
	}
	nr := netlink.NewRule()
	nr.Family = af
	nr.Priority = r.Priority
	nr.Table = r.Table
	nr.IifName = r.IifName
	nr.Protocol = r.Protocol
	if nr.Src, err = ipNet(r.Src, r.Family); err != nil {
		return nil, fmt.Errorf("rule src: %w", err)
	}
	if nr.Dst, err = ipNet(r.Dst, r.Family); err != nil {
		return nil, fmt.Errorf("rule dst: %w", err)
	}
	if r.Mask != 0 {
		mask := r.Mask
		nr.Mark = r.Mark
		nr.Mask = &mask
	} else if r.Mark != 0 {
		return nil, fmt.Errorf("rule has mark %#x but no mask", r.Mark)
	}
	if r.Priority < 0 {
		return nil, fmt.Errorf("rule priority %d is negative", r.Priority)
	}
	if r.Table <= 0 {
		return nil, fmt.Errorf("rule table %d is invalid", r.Table)
	}
	return nr, nil
}

func (h *Host) applyRule(step state.Step) error {
	switch step.Action {
	case state.Create:
		return h.addRule(*step.After.Rule)
	case state.Delete:
		return h.delRule(*step.Before.Rule)
	}
	// Every field is part of a rule's identity: add the new one first so
	// that traffic is never without a rule, then remove the old one.
	if *step.Before.Rule == *step.After.Rule {
		return h.addRule(*step.After.Rule)
	}
	if err := h.addRule(*step.After.Rule); err != nil {
		return err
	}
	return h.delRule(*step.Before.Rule)
}

func (h *Host) addRule(r state.Rule) error {
	nr, err := buildRule(r)
	if err != nil {
		return err
	}
	if err := h.nl.RuleAdd(nr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add rule: %w", err)
	}
	return nil
}

func (h *Host) delRule(r state.Rule) error {
	nr, err := buildRule(r)
	if err != nil {
		return err
	}
	if err := h.nl.RuleDel(nr); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete rule: %w", err)
	}
	return nil
}
