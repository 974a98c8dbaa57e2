package kernel

import (
	"fmt"
	"time"

	"github.com/google/nftables"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/state"
)

// updateNft turns the tables migrate wrote from cur (verified: the kernel
// holds exactly its rendering, its rules tagged with digest) into the
// rendering of t, in one transaction that carries gen, the ruleset
// generation at which cur was verified (any change since, a hand edit of
// the table included, makes it fail with ERESTART, and replaceNft reads
// the table again):
//
//  1. elements that are gone, or whose data changed (a canary verdict, a
//     forward's destination), are deleted from the sets that stay;
//  2. only when the fixed part changed (another rule digest, or a set or
//     chain added, removed or of another type): every chain of cur is
//     flushed and deleted (verdict maps' elements first), sets that are
//     gone or changed are deleted, and the chains of t are added;
//  3. new sets with their elements, and new elements of the sets that
//     stay are added;
//  4. only when the fixed part changed: every rule of t is added.
//
// Sets that stay keep their other elements and those elements' counters
// (acct and flows: the per-service counters). A table of a family that
// appears or disappears (arp, for no-ARP addresses) is added or deleted
// whole. Conntrack entries are not touched: established flows keep their
// marks and with them their path.
//
// layout is the layout of cur's rules (nftVerify): a table an older
// agent wrote is in an older layout, its digest differs from t's, and so
// all its chains go and t's come (step 2), its sets and their counters
// staying.
//
// ro and rn are the renderings of cur and t when the caller has them
// (from the verification of cur, and from the check of t), in no batch
// yet; nil renders them here. It returns the stamp of its transaction
// when it can be attributed (stampAfter).
func (h *Host) updateNft(gen uint32, cur state.NftTable, digest string, layout nftLayout, t state.NftTable, ro, rn *rendered) (*nftStamp, error) {
	t0 := time.Now()
	var err error
	if ro == nil {
		if ro, err = renderLayout(cur.Name, cur.Spec, layout); err != nil {
			return nil, fmt.Errorf("render the current nft table: %w", err)
		}
	}
	if rn == nil {
		if rn, err = render(t.Name, t.Spec); err != nil {
			return nil, err
		}
	}
	cc, err := h.NewNft()
	if err != nil {
		return nil, err
	}
	ops := 0 // messages in the batch
	rulesChanged := digest != ruleDigest(t.Spec)
	byFamily := func(r *rendered) map[nftables.TableFamily]*renderedTable {
		m := map[nftables.TableFamily]*renderedTable{}
		for _, rt := range r.tables() {
			m[rt.table.Family] = rt
		}
		return m
	}
	oldBy, newBy := byFamily(ro), byFamily(rn)
	for _, f := range nftFamilies {
		o, n := oldBy[f], newBy[f]
		switch {
		case o == nil && n == nil:
		case o == nil:
			if err := n.addTo(cc); err != nil {
				return nil, err
			}
			ops++
		case n == nil:
			cc.DelTable(&nftables.Table{Family: f, Name: cur.Name})
			ops++
		default:
			k, err := updateTable(cc, o, n, rulesChanged)
			if err != nil {
				return nil, err
			}
			ops += k
		}
	}
	timing.Agent.Since("apply: nft: render both, diff", t0)
	defer timing.Agent.Since("apply: nft: netlink transaction", time.Now())
	if err := cc.FlushWithGenID(gen); err != nil {
		return nil, fmt.Errorf("nft transaction: %w", err)
	}
	if ops == 0 {
		// An empty batch may commit nothing and leave the generation
		// as it was: a generation read now cannot be told from
		// another process's.
		return nil, nil
	}
	return h.stampAfter(cc, gen), nil
}

// sameSet tells whether a set of the current rendering can stay as it is
// for the new one (its elements aside).
func sameSet(a, b *nftables.Set) bool {
	return a.Name == b.Name && a.IsMap == b.IsMap && a.Concatenation == b.Concatenation &&
		a.KeyType.Name == b.KeyType.Name && a.KeyType.Bytes == b.KeyType.Bytes &&
		a.DataType.Name == b.DataType.Name && a.DataType.Bytes == b.DataType.Bytes &&
		a.Counter == b.Counter && a.Dynamic == b.Dynamic && a.HasTimeout == b.HasTimeout &&
		a.Timeout == b.Timeout && a.Size == b.Size && a.Interval == b.Interval
}

// elemValue is what a set element maps to, for comparison ("" for a set).
func elemValue(s *nftables.Set, e nftables.SetElement) string {
	if !s.IsMap {
		return ""
	}
	if e.VerdictData != nil {
		return fmt.Sprintf("verdict %d %s", e.VerdictData.Kind, e.VerdictData.Chain)
	}
	return "data " + string(e.Val)
}

// updateTable adds to cc's batch what turns table o into table n (same
// family and name); see updateNft. It returns how many changes it added
// (0: the batch holds nothing for this table).
func updateTable(cc *nftables.Conn, o, n *renderedTable, rulesChanged bool) (int, error) {
	ops := 0
	oldSets := map[string]int{}
	for i, s := range o.sets {
		oldSets[s.Name] = i
	}
	kept := map[string]bool{}
	for _, s := range n.sets {
		if i, ok := oldSets[s.Name]; ok && sameSet(o.sets[i], s) {
			kept[s.Name] = true
		}
	}
	if len(kept) != len(o.sets) || len(kept) != len(n.sets) {
		rulesChanged = true // a rule refers to a set that goes or comes
	}
	oldChains := map[string]*nftables.Chain{}
	for _, c := range o.chains {
		oldChains[c.Name] = c
	}
	keptChain := map[string]bool{}
	for _, c := range n.chains {
		if oc, ok := oldChains[c.Name]; ok && chainSig(oc) == chainSig(c) && oc.Type == c.Type {
			keptChain[c.Name] = true
		}
	}
	if len(keptChain) != len(o.chains) || len(keptChain) != len(n.chains) {
		rulesChanged = true
	}

	// What stays of each kept set's elements, and what is added. When
	// the rules change, every chain is deleted and added again, so that
	// the table lists its chains in the order a fresh one would (a
	// rollback gives back the same listing); a verdict map's elements
	// jump to chains, so they go and come back with them (they have no
	// counters).
	adds := make([][]nftables.SetElement, len(n.sets))
	for i, s := range n.sets {
		if !kept[s.Name] {
			continue
		}
		if s.Dynamic {
			continue // filled from the packet path: traffic, not configuration
		}
		os := o.sets[oldSets[s.Name]]
		if rulesChanged && s.DataType.Name == nftables.TypeVerdict.Name {
			if err := inChunks(keysOf(o.elems[oldSets[s.Name]]), func(el []nftables.SetElement) error { return cc.SetDeleteElements(s, el) }); err != nil {
				return 0, fmt.Errorf("delete elements from map %s: %w", s.Name, err)
			}
			ops += len(o.elems[oldSets[s.Name]])
			adds[i] = n.elems[i]
			continue
		}
		want := map[string]string{}
		for _, e := range n.elems[i] {
			want[string(e.Key)] = elemValue(s, e)
		}
		have := map[string]string{}
		var del []nftables.SetElement
		for _, e := range o.elems[oldSets[s.Name]] {
			v := elemValue(os, e)
			have[string(e.Key)] = v
			if w, ok := want[string(e.Key)]; !ok || w != v {
				del = append(del, nftables.SetElement{Key: e.Key})
			}
		}
		for _, e := range n.elems[i] {
			if v, ok := have[string(e.Key)]; !ok || v != want[string(e.Key)] {
				adds[i] = append(adds[i], e)
			}
		}
		if err := inChunks(del, func(el []nftables.SetElement) error { return cc.SetDeleteElements(s, el) }); err != nil {
			return 0, fmt.Errorf("delete elements from set %s: %w", s.Name, err)
		}
		ops += len(del)
	}

	oldObjs := map[string]bool{}
	for _, ob := range o.objs {
		oldObjs[ob.Name] = true
	}
	newObjs := map[string]bool{}
	for _, ob := range n.objs {
		newObjs[ob.Name] = true
		if !oldObjs[ob.Name] {
			rulesChanged = true // a rule names an object that comes
		}
	}
	for _, ob := range o.objs {
		if !newObjs[ob.Name] {
			rulesChanged = true
		}
	}
	if rulesChanged {
		ops++ // chains deleted and added
		// Rules go first: they refer to sets, chains and objects.
		for _, c := range o.chains {
			cc.FlushChain(c)
		}
		for _, s := range o.sets {
			if !kept[s.Name] {
				cc.DelSet(s)
			}
		}
		for _, c := range o.chains {
			cc.DelChain(c)
		}
		for _, ob := range o.objs {
			if !newObjs[ob.Name] {
				cc.DeleteObject(ob)
			}
		}
		// Objects that stay keep what they hold (a ct timeout: the
		// flows that use it); new ones come before the rules.
		for _, ob := range n.objs {
			if !oldObjs[ob.Name] {
				cc.AddObj(ob)
			}
		}
		for _, c := range n.chains {
			cc.AddChain(c)
		}
	}
	for i, s := range n.sets {
		el := adds[i]
		if !kept[s.Name] {
			if err := cc.AddSet(s, nil); err != nil {
				return 0, fmt.Errorf("add set %s: %w", s.Name, err)
			}
			ops++
			el = n.elems[i]
		}
		if err := inChunks(el, func(el []nftables.SetElement) error { return cc.SetAddElements(s, el) }); err != nil {
			return 0, fmt.Errorf("add elements to set %s: %w", s.Name, err)
		}
		ops += len(el)
	}
	if rulesChanged {
		for _, rule := range n.rules() {
			cc.AddRule(rule)
		}
	}
	return ops, nil
}

// inChunks calls f with at most nftElemChunk elements at a time.
func inChunks(el []nftables.SetElement, f func([]nftables.SetElement) error) error {
	for len(el) > 0 {
		k := min(len(el), nftElemChunk)
		if err := f(el[:k]); err != nil {
			return err
		}
		el = el[k:]
	}
	return nil
}
