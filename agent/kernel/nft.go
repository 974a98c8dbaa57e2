package kernel

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/userdata"
	"github.com/opsmigrate/migrate/agent/reserve"
	"github.com/opsmigrate/migrate/internal/timing"
	"github.com/opsmigrate/migrate/state"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// Tag prefix of every rule migrate writes. The tag is stored as the rule's
// nft comment (userdata TLV), so `nft list ruleset` shows
// `comment "migrate:<digest>"`.
const nftTagPrefix = "migrate:"

// nftElemChunk is how many set elements go into one SetAddElements call.
// All chunks still go into the same batch (one transaction).
const nftElemChunk = 1000

func nftTag(spec state.NftSpec, layout nftLayout) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, nftTagPrefix+ruleDigestLayout(spec, layout))
}

// ruleDigest is a short hash of what the spec's chains and rules depend
// on: the spec without its element lists (services, accounted, forwards,
// no-ARP addresses, UDP answer services), plus which of those lists are
// present and the distinct canary percents. Every rule carries it, so a
// change of elements alone (a service added, a stage changed between two
// percents already in use) leaves the rules, and their tags, as they are:
// the agent then updates set elements only, and the per-element counters
// live on. It is the digest of the current layout.
func ruleDigest(spec state.NftSpec) string { return ruleDigestLayout(spec, layoutCurrent) }

// ruleDigestLayout is ruleDigest for the rules of a given layout. From
// layoutV2 on the layout number is part of what is hashed; layoutV1's
// digest is exactly what agents before layouts wrote, so their tables
// are recognised as theirs (nftVerify).
func ruleDigestLayout(spec state.NftSpec, layout nftLayout) string {
	fixed := struct {
		Spec        state.NftSpec `json:"spec"`
		Percents    []int         `json:"percents,omitempty"`
		Forwards    bool          `json:"forwards,omitempty"`
		NoARP       bool          `json:"no_arp,omitempty"`
		UDPServices bool          `json:"udp_services,omitempty"`
		Layout      int           `json:"layout,omitempty"`
	}{Spec: spec, Forwards: len(spec.Forwards) > 0, NoARP: len(spec.NoARP) > 0, UDPServices: len(spec.UDPServices) > 0}
	if layout != layoutV1 {
		fixed.Layout = int(layout)
	}
	seen := map[int]bool{}
	for _, s := range spec.Services {
		if s.Percent < 100 && !seen[s.Percent] {
			seen[s.Percent] = true
			fixed.Percents = append(fixed.Percents, s.Percent)
		}
	}
	sort.Ints(fixed.Percents)
	fixed.Spec.Services, fixed.Spec.Accounted, fixed.Spec.Forwards = nil, nil, nil
	fixed.Spec.NoARP, fixed.Spec.UDPServices = nil, nil
	b, _ := json.Marshal(fixed)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// ruleTag extracts the tag of a rule: the nft comment, or raw userdata
// starting with the prefix.
func ruleTag(ud []byte) (string, bool) {
	if bytes.HasPrefix(ud, []byte(nftTagPrefix)) {
		return string(ud), true
	}
	if c, ok := userdata.GetString(ud, userdata.TypeComment); ok && strings.HasPrefix(c, nftTagPrefix) {
		return c, true
	}
	return "", false
}

func (h *Host) nftStatePath(name string) string {
	return filepath.Join(h.StateDir, "nft-"+name+".json")
}

func (h *Host) loadSavedNft(name string) (*state.NftTable, error) {
	r, err := h.loadNftRecord(name)
	if err != nil {
		return nil, err
	}
	return &r.NftTable, nil
}

func (h *Host) loadNftRecord(name string) (*nftRecord, error) {
	b, err := readNoFollow(h.nftStatePath(name))
	if err != nil {
		return nil, err
	}
	var r nftRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", h.nftStatePath(name), err)
	}
	return &r, nil
}

// saveNft records t as what migrate last wrote, with the stamp of the
// transaction that wrote it (nil: unknown).
func (h *Host) saveNft(t state.NftTable, stamp *nftStamp) error {
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(nftRecord{NftTable: t, Written: stamp, Layout: layoutCurrent}, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(h.StateDir, ".nft-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, h.nftStatePath(t.Name))
}

// nftFamilies are the families of migrate's tables, in the order of
// rendered.tables().
var nftFamilies = []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyARP}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return fmt.Sprintf("family%d", f)
}

// kernelTables are migrate's tables NAME as the kernel has them; nil for
// a table that does not exist.
type kernelTables map[nftables.TableFamily]*nftables.Table

func (k kernelTables) empty() bool {
	for _, t := range k {
		if t != nil {
			return false
		}
	}
	return true
}

func findTables(cc *nftables.Conn, name string) (kernelTables, error) {
	out := kernelTables{}
	for _, f := range nftFamilies {
		tables, err := cc.ListTablesOfFamily(f)
		if err != nil {
			return nil, fmt.Errorf("list nft %s tables: %w", familyName(f), err)
		}
		for _, t := range tables {
			if t.Name == name {
				out[f] = t
			}
		}
	}
	return out, nil
}

// nftFacts reads migrate's tables NAME (inet, and arp on NEW). It returns
// the saved table when the kernel still holds exactly what migrate wrote,
// else a placeholder and the reason for the drift. With withStats it also
// reads the live counters of table inet NAME (whether or not it drifted).
func (h *Host) nftFacts(name string, withStats bool) (*state.NftTable, string, *state.Stats, error) {
	t, reason, stats, _, err := h.nftRead(name, withStats)
	return t, reason, stats, err
}

// verifiedNft is a table nftRead found without drift, at generation gen.
type verifiedNft struct {
	gen    uint32
	table  state.NftTable
	digest string
	layout nftLayout // the layout the kernel's rules are in
	// rendered is the rendering of table the verification compared the
	// kernel with: what an update starts from (updateNft), rendered once.
	// It has been in no batch yet, and is handed out once (nftCurrent).
	rendered *rendered
	// rendering, when rendered is nil, delivers that rendering from a
	// goroutine (renderLater; nil on a render error).
	rendering chan *rendered
}

// renderLater renders the verified table in the background when it has
// no rendering yet (nftStamped skipped the comparison that makes one):
// an update starts from it (updateNft). Facts start it once they have
// read everything else, so that it does not compete with them for the
// CPU, and it runs while the CLI plans.
func (v *verifiedNft) renderLater() {
	if v.rendered != nil || v.rendering != nil {
		return
	}
	ch := make(chan *rendered, 1)
	go func(name string, spec state.NftSpec, layout nftLayout) {
		rd, err := renderLayout(name, spec, layout)
		if err != nil {
			rd = nil
		}
		ch <- rd
	}(v.table.Name, v.table.Spec, v.layout)
	v.rendering = ch
}

// take hands out the rendering once: nil when there is none.
func (v *verifiedNft) take() *rendered {
	r := v.rendered
	if r == nil && v.rendering != nil {
		r = <-v.rendering
	}
	v.rendered, v.rendering = nil, nil
	return r
}

// nftRead is nftFacts, and also returns the digest the rules carry.
func (h *Host) nftRead(name string, withStats bool) (*state.NftTable, string, *state.Stats, string, error) {
	h.verified = nil
	cc, err := h.NewNft()
	if err != nil {
		return nil, "", nil, "", err
	}
	gen, err := cc.GetGen()
	if err != nil {
		return nil, "", nil, "", fmt.Errorf("read nft generation: %w", err)
	}
	if !withStats {
		if t, ok := h.nftStamped(name, gen.ID); ok {
			return t, "", nil, h.verified.digest, nil
		}
	}
	kt, err := findTables(cc, name)
	if err != nil || kt.empty() {
		return nil, "", nil, "", err
	}
	rd := &nftReader{Conn: cc}
	reason, saved, err := h.nftVerify(rd, name, kt)
	if err != nil {
		return nil, "", nil, "", err
	}
	var stats *state.Stats
	if withStats && kt[nftables.TableFamilyINet] != nil {
		if stats, err = nftStats(rd, kt[nftables.TableFamilyINet], saved); err != nil {
			return nil, "", nil, "", err
		}
	}
	if reason != "" {
		// What migrate last wrote, when its record is readable: the plan
		// then rewrites the table from the desired spec, and undoing that
		// step puts back what migrate had written, not the hand edit.
		t := &state.NftTable{Family: "inet", Name: name}
		if saved != nil && saved.Name == name && saved.Family == "inet" {
			t = saved
		}
		return t, "nft table " + name + " was changed outside migrate: " + reason, stats, rd.digest, nil
	}
	h.verified = &verifiedNft{gen: gen.ID, table: *saved, digest: rd.digest, layout: rd.layout, rendered: rd.rendered}
	return saved, "", stats, rd.digest, nil
}

// nftStamped is the fast path of nftRead: when the agent's record carries
// the stamp of the ruleset the namespace holds now (generation gen, this
// boot, this namespace: nftStamp), no transaction has run since migrate
// wrote the table, so the kernel holds exactly the record's rendering,
// its rules tagged with the record's digest (updateNft and flushNft leave
// every rule tagged with it), and neither needs listing. Counters are not
// read here (status asks for them: the full path).
func (h *Host) nftStamped(name string, gen uint32) (*state.NftTable, bool) {
	t0 := time.Now()
	r, err := h.loadNftRecord(name)
	if err != nil || r.Name != name || r.Family != "inet" || !h.stampMatches(r.Written, gen) {
		return nil, false
	}
	// The record names the layout its agent wrote; an agent before
	// layouts wrote layoutV1 and no layout field.
	layout := r.Layout
	if layout == 0 {
		layout = layoutV1
	}
	h.verified = &verifiedNft{gen: gen, table: r.NftTable, digest: ruleDigestLayout(r.Spec, layout), layout: layout}
	timing.Agent.Since("facts: nft table unchanged since migrate wrote it (generation, boot, netns)", t0)
	return &r.NftTable, true
}

// nftCurrent is what replaceNft needs of nftRead: the table, its drift
// and its rules' digest, and when the table was verified the generation
// it was verified at (an update commits only at that generation), the
// layout its rules are in, and its rendering in that layout (nil when not
// rendered yet; handed out once). It reuses the
// last verification when the ruleset generation has not moved since
// (nothing changed any table), so that the facts and the apply of one run
// list 30 000 elements, and render what is there, once.
func (h *Host) nftCurrent(name string) (*state.NftTable, string, string, uint32, nftLayout, *rendered, error) {
	if v := h.verified; v != nil && v.table.Name == name {
		if cc, err := h.NewNft(); err == nil {
			if gen, err := cc.GetGen(); err == nil && gen.ID == v.gen {
				t := v.table
				return &t, "", v.digest, v.gen, v.layout, v.take(), nil
			}
		}
	}
	t, drift, _, digest, err := h.nftRead(name, false)
	var r *rendered
	var gen uint32
	layout := layoutCurrent
	if v := h.verified; err == nil && drift == "" && v != nil {
		r = v.take()
		gen = v.gen
		layout = v.layout
	}
	return t, drift, digest, gen, layout, r, err
}

// nftReader reads from one nftables connection and remembers set
// elements, so that verifying a table and reading its counters list each
// set once.
type nftReader struct {
	*nftables.Conn
	elems    map[string][]nftables.SetElement
	digest   string    // the digest migrate's rules carry (nftVerify)
	layout   nftLayout // the layout of the digest (nftVerify)
	rendered *rendered // the rendering of the agent's record in that layout (nftVerify)
}

func (r *nftReader) GetSetElements(s *nftables.Set) ([]nftables.SetElement, error) {
	k := fmt.Sprintf("%d %s %s", s.Table.Family, s.Table.Name, s.Name)
	if e, ok := r.elems[k]; ok {
		return e, nil
	}
	e, err := r.Conn.GetSetElements(s)
	if err != nil {
		return nil, err
	}
	if r.elems == nil {
		r.elems = map[string][]nftables.SetElement{}
	}
	r.elems[k] = e
	return e, nil
}

// kernelChain is one chain of a table and its rule count.
type kernelChain struct {
	c     *nftables.Chain
	rules int
}

// chainSig describes a chain's identity and hook, for comparison.
func chainSig(c *nftables.Chain) string {
	s := c.Name
	if c.Hooknum != nil {
		s += fmt.Sprintf(" type %s hook %d", c.Type, *c.Hooknum)
		if c.Priority != nil {
			s += fmt.Sprintf(" priority %d", *c.Priority)
		}
		if c.Policy != nil {
			s += fmt.Sprintf(" policy %d", *c.Policy)
		}
	}
	return s
}

// nftVerify compares the kernel's tables kt with the saved spec. It
// returns a short reason when they differ, and the saved record when it
// could be read.
func (h *Host) nftVerify(cc *nftReader, name string, kt kernelTables) (string, *state.NftTable, error) {
	have := map[nftables.TableFamily][]kernelChain{}
	digest := ""
	n := 0
	for _, f := range nftFamilies {
		t := kt[f]
		if t == nil {
			continue
		}
		chains, err := cc.ListChainsOfTableFamily(f)
		if err != nil {
			return "", nil, fmt.Errorf("list nft %s chains: %w", familyName(f), err)
		}
		for _, c := range chains {
			if c.Table == nil || c.Table.Name != name {
				continue
			}
			rules, err := cc.GetRules(t, c)
			if err != nil {
				return "", nil, fmt.Errorf("list rules of chain %s %s %s: %w", familyName(f), name, c.Name, err)
			}
			have[f] = append(have[f], kernelChain{c: c, rules: len(rules)})
			for _, r := range rules {
				n++
				where := fmt.Sprintf("rule %d (table %s, chain %s, handle %d)", n, familyName(f), c.Name, r.Handle)
				tag, ok := ruleTag(r.UserData)
				if !ok {
					return where + " has no migrate tag", nil, nil
				}
				d := strings.TrimPrefix(tag, nftTagPrefix)
				if digest == "" {
					digest = d
				} else if d != digest {
					return fmt.Sprintf("%s has tag %s, others %s", where, d, digest), nil, nil
				}
			}
		}
	}
	if n == 0 {
		return "it has no rules", nil, nil
	}
	cc.digest = digest
	saved, err := h.loadSavedNft(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "the agent has no record of what migrate wrote (" + h.nftStatePath(name) + " is missing)", nil, nil
	}
	if err != nil {
		return "the agent's record is unreadable: " + err.Error(), nil, nil
	}
	if saved.Name != name || saved.Family != "inet" {
		return fmt.Sprintf("the agent's record is for table %s %s", saved.Family, saved.Name), nil, nil
	}
	// The digest tells the layout the rules are in: the current one, an
	// earlier one's (layoutV2, layoutV3) from an earlier agent, or
	// layoutV1 from an agent before layouts (whose rules carry the same
	// digest as before, or, from agents before incremental updates, the
	// digest of the whole spec). Such a table is still migrate's own: it
	// is compared with the record rendered in its layout, and the next
	// apply writes the current one (updateNft).
	layout := layoutCurrent
	switch want := ruleDigest(saved.Spec); digest {
	case want:
	case ruleDigestLayout(saved.Spec, layoutV3):
		layout = layoutV3
	case ruleDigestLayout(saved.Spec, layoutV2):
		layout = layoutV2
	case ruleDigestLayout(saved.Spec, layoutV1), saved.Spec.Digest():
		layout = layoutV1
	default:
		return fmt.Sprintf("rules carry digest %s but migrate last wrote %s", digest, want), saved, nil
	}
	want, err := renderLayout(name, saved.Spec, layout)
	if err != nil {
		return "the agent's record does not render: " + err.Error(), saved, nil
	}
	cc.rendered = want
	cc.layout = layout
	wantBy := map[nftables.TableFamily]*renderedTable{}
	for _, w := range want.tables() {
		wantBy[w.table.Family] = w
	}
	for _, f := range nftFamilies {
		fn := familyName(f)
		w, t := wantBy[f], kt[f]
		switch {
		case w == nil && t == nil:
			continue
		case w == nil:
			return fmt.Sprintf("table %s %s exists, but migrate wrote none", fn, name), saved, nil
		case t == nil:
			return fmt.Sprintf("table %s %s is missing", fn, name), saved, nil
		}
		if reason := compareChains(fn, have[f], w); reason != "" {
			return reason, saved, nil
		}
		reason, err := compareSets(cc, fn, t, w)
		if err != nil || reason != "" {
			return reason, saved, err
		}
	}
	return "", saved, nil
}

// compareChains compares chains (name, type, hook, priority, policy) and
// the number of rules in each.
func compareChains(fn string, have []kernelChain, want *renderedTable) string {
	wantRules := map[string]int{}
	for _, r := range want.rules() {
		wantRules[r.Chain.Name]++
	}
	var hs, ws []string
	for _, c := range have {
		hs = append(hs, chainSig(c.c))
	}
	for _, c := range want.chains {
		ws = append(ws, chainSig(c))
	}
	sort.Strings(hs)
	sort.Strings(ws)
	if strings.Join(hs, ", ") != strings.Join(ws, ", ") {
		return fmt.Sprintf("table %s has chains [%s], migrate wrote [%s]", fn, strings.Join(hs, ", "), strings.Join(ws, ", "))
	}
	for _, c := range have {
		if w := wantRules[c.c.Name]; w != c.rules {
			return fmt.Sprintf("chain %s %s has %d rules, migrate wrote %d", fn, c.c.Name, c.rules, w)
		}
	}
	return ""
}

// verdictString renders a vmap element's verdict: from the kernel's
// NFTA_DATA_VERDICT attributes (val) or from what migrate wrote.
func verdictString(e nftables.SetElement) string {
	if e.VerdictData != nil {
		return fmt.Sprintf("%d %s", int32(e.VerdictData.Kind), e.VerdictData.Chain)
	}
	attrs, err := nl.ParseRouteAttr(e.Val)
	if err != nil {
		return "undecodable " + hex.EncodeToString(e.Val)
	}
	code, chain := int32(0), ""
	for _, a := range attrs {
		switch a.Attr.Type & nlaTypeMask {
		case unix.NFTA_VERDICT_CODE:
			if len(a.Value) == 4 {
				code = int32(binaryutil.BigEndian.Uint32(a.Value))
			}
		case unix.NFTA_VERDICT_CHAIN:
			chain = unix.ByteSliceToString(a.Value)
		}
	}
	return fmt.Sprintf("%d %s", code, chain)
}

// elemData renders a map element's data for comparison: the verdict of a
// vmap element, the hex bytes of a data map's (forwards: address and
// port).
func elemData(m *nftables.Set, e nftables.SetElement) string {
	if m.DataType.Name == nftables.TypeVerdict.Name {
		return "verdict " + verdictString(e)
	}
	return "data " + hex.EncodeToString(e.Val)
}

// compareSets compares sets, their kind (set or map) and their elements,
// keys and verdicts. Element counters are not compared.
func compareSets(cc *nftReader, fn string, t *nftables.Table, want *renderedTable) (string, error) {
	sets, err := cc.GetSets(t)
	if err != nil {
		return "", fmt.Errorf("list nft sets of table %s %s: %w", fn, t.Name, err)
	}
	if len(sets) != len(want.sets) {
		return fmt.Sprintf("table %s has %d sets, migrate wrote %d", fn, len(sets), len(want.sets)), nil
	}
	byName := map[string]*nftables.Set{}
	for _, s := range sets {
		byName[s.Name] = s
	}
	for i, ws := range want.sets {
		s := byName[ws.Name]
		if s == nil {
			return "set " + ws.Name + " is missing", nil
		}
		if s.IsMap != ws.IsMap {
			return "set " + ws.Name + " is not of the kind migrate wrote", nil
		}
		if ws.Dynamic {
			// Filled from the packet path: its elements are traffic,
			// not configuration.
			if !s.Dynamic || s.KeyType.Bytes != ws.KeyType.Bytes || s.DataType.Bytes != ws.DataType.Bytes {
				return "set " + ws.Name + " is not of the type migrate wrote", nil
			}
			continue
		}
		elems, err := cc.GetSetElements(s)
		if err != nil {
			return "", fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		if len(elems) != len(want.elems[i]) {
			return fmt.Sprintf("set %s has %d elements, migrate wrote %d", s.Name, len(elems), len(want.elems[i])), nil
		}
		if ws.IsMap && ws.DataType.Name != nftables.TypeVerdict.Name &&
			(s.DataType.Bytes != ws.DataType.Bytes || s.KeyType.Bytes != ws.KeyType.Bytes) {
			return "map " + ws.Name + " is not of the type migrate wrote", nil
		}
		wk := map[string]string{}
		for _, e := range want.elems[i] {
			v := ""
			if ws.IsMap {
				v = elemData(ws, e)
			}
			wk[string(e.Key)] = v
		}
		for _, e := range elems {
			v, ok := wk[string(e.Key)]
			if !ok {
				return fmt.Sprintf("set %s has element %s that migrate did not write", s.Name, hex.EncodeToString(e.Key)), nil
			}
			if ws.IsMap {
				if got := elemData(ws, e); got != v {
					return fmt.Sprintf("map %s maps %s to %q, migrate wrote %q", s.Name, hex.EncodeToString(e.Key), got, v), nil
				}
			}
		}
	}
	return "", nil
}

func (h *Host) applyNft(step state.Step) error {
	if step.Action == state.Delete {
		return h.deleteNft(*step.Before.Nft)
	}
	return h.replaceNft(*step.After.Nft)
}

// replaceNft makes tables inet NAME (and arp NAME) hold exactly the
// rendering of t.Spec, in one transaction. When the kernel holds what
// migrate last wrote, that transaction changes only what differs
// (updateNft); else (no table, or drift) it deletes the old tables (if
// any) and adds the new ones in the same batch. The batch carries the ruleset
// generation read before, so a concurrent change makes it fail with
// ERESTART and it is retried.
func (h *Host) replaceNft(t state.NftTable) error {
	if t.Family != "inet" {
		return fmt.Errorf("nft table family %q: migrate only manages inet tables", t.Family)
	}
	if err := h.warmUDP(t); err != nil {
		return err
	}
	t0 := time.Now()
	rn, err := render(t.Name, t.Spec)
	timing.Agent.Since("apply: nft: render the new table", t0)
	if err != nil {
		return err
	}
	var stamp *nftStamp
	for attempt := 0; attempt < 3; attempt++ {
		t0 := time.Now()
		cur, drift, digest, gen, layout, ro, rerr := h.nftCurrent(t.Name)
		timing.Agent.Since("apply: nft: read what is there", t0)
		if attempt > 0 {
			rn = nil // it went into a failed batch: render afresh
		}
		switch {
		case rerr == nil && drift == "" && cur != nil && digest == ruleDigest(cur.Spec) &&
			(state.Object{Nft: cur}).Equal(state.Object{Nft: &t}):
			return nil // already there, counters kept
		case rerr == nil && drift == "" && cur != nil:
			// The kernel holds exactly what migrate last wrote: change
			// only what differs, so that counters and the sets' other
			// elements stay.
			stamp, err = h.updateNft(gen, *cur, digest, layout, t, ro, rn)
		default:
			stamp, err = h.flushNft(t, rn)
		}
		h.verified = nil // written (or failed): read it again next time
		if !errors.Is(err, unix.ERESTART) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer timing.Agent.Since("apply: nft: save the agent's record", time.Now())
	if err := reserve.Retry(h.StateDir, func() error { return h.saveNft(t, stamp) }); err != nil {
		return fmt.Errorf("nft table applied, but recording it failed: %w", err)
	}
	return nil
}

// flushNft replaces the tables with the rendering of t; r is that
// rendering when the caller has it (nil: rendered here). It returns the
// stamp of its transaction when it can be attributed (stampAfter).
func (h *Host) flushNft(t state.NftTable, r *rendered) (*nftStamp, error) {
	cc, err := h.NewNft()
	if err != nil {
		return nil, err
	}
	gen, err := cc.GetGen()
	if err != nil {
		return nil, fmt.Errorf("read nft generation: %w", err)
	}
	cur, err := findTables(cc, t.Name)
	if err != nil {
		return nil, err
	}
	if r == nil {
		if r, err = render(t.Name, t.Spec); err != nil {
			return nil, err
		}
	}
	for _, f := range nftFamilies {
		if cur[f] != nil {
			cc.DelTable(&nftables.Table{Family: f, Name: t.Name})
		}
	}
	for _, rt := range r.tables() {
		if err := rt.addTo(cc); err != nil {
			return nil, err
		}
	}
	if err := cc.FlushWithGenID(gen.ID); err != nil {
		return nil, fmt.Errorf("nft transaction: %w", err)
	}
	// The batch is never empty: it adds at least table inet NAME.
	return h.stampAfter(cc, gen.ID), nil
}

func (h *Host) deleteNft(t state.NftTable) error {
	h.verified = nil
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = h.deleteNftOnce(t.Name)
		if !errors.Is(err, unix.ERESTART) && !errors.Is(err, unix.ENOENT) {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := os.Remove(h.nftStatePath(t.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("nft table deleted, but removing its record failed: %w", err)
	}
	return nil
}

// deleteNftOnce deletes tables inet NAME and arp NAME, whichever exist, in
// one transaction.
func (h *Host) deleteNftOnce(name string) error {
	cc, err := h.NewNft()
	if err != nil {
		return err
	}
	gen, err := cc.GetGen()
	if err != nil {
		return fmt.Errorf("read nft generation: %w", err)
	}
	cur, err := findTables(cc, name)
	if err != nil || cur.empty() {
		return err
	}
	for _, f := range nftFamilies {
		if cur[f] != nil {
			cc.DelTable(&nftables.Table{Family: f, Name: name})
		}
	}
	if err := cc.FlushWithGenID(gen.ID); err != nil {
		return fmt.Errorf("nft transaction: %w", err)
	}
	return nil
}

// warmUDP: OLD tells a flow it must keep from one it may move by its
// conntrack entry. A TCP connection from before the switch is known by
// its first packet (not a SYN); a UDP "connection" is not. Where nothing
// tracked flows before migrate's first table on OLD, a UDP client that
// keeps its socket (games, QUIC, VoIP, WireGuard) had no entry, its next
// datagram looked new, and it was moved to NEW mid-session (seen in the
// lab: every answer from OLD, then from NEW). So when OLD's table is
// created with UDP services to move and the namespace's conntrack holds
// nothing yet, the table goes in first without them (tracking starts:
// OLD's daemons' answers make the sessions' entries established), and
// state.UDPWarmup later the full table (the usual update of set elements). A
// session that sends within that time stays with OLD.
func (h *Host) warmUDP(t state.NftTable) error {
	if t.Spec.Role != state.RoleOld || h.NoUDPWarmup {
		return nil
	}
	warm := t
	warm.Spec.Services = nil
	for _, e := range t.Spec.Services {
		if e.Proto != state.UDP {
			warm.Spec.Services = append(warm.Spec.Services, e)
		}
	}
	if len(warm.Spec.Services) == len(t.Spec.Services) {
		return nil
	}
	// The count first (a file read): once migrate's table is there it
	// is rarely 0, and the table lookup below is a netlink dump.
	if n, ok, err := h.readSysctl("net.netfilter.nf_conntrack_count"); err != nil || ok && strings.TrimSpace(n) != "0" {
		return nil
	}
	cc, err := h.NewNft()
	if err != nil {
		return nil // the usual path reports it
	}
	if cur, err := findTables(cc, t.Name); err != nil || cur[nftables.TableFamilyINet] != nil {
		return nil // migrate's table is there: tracking runs
	}
	if err := h.replaceNft(warm); err != nil {
		return err
	}
	time.Sleep(state.UDPWarmup)
	return nil
}
