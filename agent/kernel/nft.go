package kernel

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/opsmigrate/migrate/state"
	"golang.org/x/sys/unix"
)

// Tag prefix of every rule migrate writes. The tag is stored as the rule's
// nft comment (userdata TLV), so `nft list ruleset` shows
// `comment "migrate:<digest>"`.
const nftTagPrefix = "migrate:"

// nftElemChunk is how many set elements go into one SetAddElements call.
// All chunks still go into the same batch (one transaction).
const nftElemChunk = 1000

// Set and chain names.
const (
	nftSet4       = "svc4"
	nftSet6       = "svc6"
	nftPrerouting = "prerouting"
	nftForward    = "forward"
)

// Registers. NFT_REG_1 and NFT_REG32_00 (8) name the same 4 bytes; a
// concatenation puts each field in the next 4-byte-aligned 32-bit register.
// An IPv4 address takes one slot (8), an IPv6 address four (8..11).
const (
	reg1     = unix.NFT_REG_1
	reg32_01 = unix.NFT_REG32_00 + 1
	reg32_02 = unix.NFT_REG32_00 + 2
	reg32_04 = unix.NFT_REG32_00 + 4
	reg32_05 = unix.NFT_REG32_00 + 5
)

var (
	svc4Type = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	svc6Type = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
)

// rendered is an NftSpec turned into nftables objects for one table.
type rendered struct {
	table  *nftables.Table
	sets   []*nftables.Set
	elems  [][]nftables.SetElement // parallel to sets
	chains []*nftables.Chain
	// rules builds the rules; it runs after the sets were added to the
	// batch, so lookups carry the sets' transaction IDs.
	rules func() []*nftables.Rule
}

func nftTag(spec state.NftSpec) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, nftTagPrefix+spec.Digest())
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

// serviceKey encodes one service as a set key: each field is padded to 4
// bytes (address, then proto + 3 zero bytes, then port in network order + 2
// zero bytes).
func serviceKey(s state.NftService) (key []byte, v6 bool, err error) {
	ip := net.ParseIP(s.Addr)
	if ip == nil {
		return nil, false, fmt.Errorf("service address %q is not an IP address", s.Addr)
	}
	var proto byte
	switch s.Proto {
	case "tcp":
		proto = unix.IPPROTO_TCP
	case "udp":
		proto = unix.IPPROTO_UDP
	default:
		return nil, false, fmt.Errorf("service %s: protocol %q is not tcp or udp", s.Addr, s.Proto)
	}
	if s.Port == 0 {
		return nil, false, fmt.Errorf("service %s/%s: port 0", s.Addr, s.Proto)
	}
	if v4 := ip.To4(); v4 != nil {
		key = append(key, v4...)
	} else {
		key = append(key, ip.To16()...)
		v6 = true
	}
	key = append(key, proto, 0, 0, 0, byte(s.Port>>8), byte(s.Port), 0, 0)
	return key, v6, nil
}

func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func native32(v uint32) []byte { return binaryutil.NativeEndian.PutUint32(v) }

// ctStateNew is `ct state new`.
func ctStateNew() []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(expr.CtStateBitNEW), Xor: native32(0)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: reg1, Data: native32(0)},
	}
}

// ctMarkOr is `ct mark set ct mark | m`.
func ctMarkOr(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: native32(m)},
		&expr.Ct{Register: reg1, Key: expr.CtKeyMARK, SourceRegister: true},
	}
}

func iifname(dev string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: ifname(dev)},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{p}},
	}
}

// tcpFlags is `tcp flags & mask == syn`; it must follow l4proto(tcp).
func tcpFlagsSyn(mask byte) []expr.Any {
	return []expr.Any{
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 1, Mask: []byte{mask}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{0x02}},
	}
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// serviceLookup is `ip[6] daddr . meta l4proto . th dport @set`, guarded by
// `meta nfproto` as the inet family requires.
func serviceLookup(set *nftables.Set, v6 bool) []expr.Any {
	if !v6 {
		return []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.NFPROTO_IPV4}},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_01},
			&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32_02, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
		}
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: []byte{unix.NFPROTO_IPV6}},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: reg32_04},
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: reg32_05, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: reg1, SetName: set.Name, SetID: set.ID},
	}
}

// mssClamp is `tcp flags & (syn|rst) == syn tcp option maxseg size set rt mtu counter`.
func mssClamp() []expr.Any {
	var e []expr.Any
	e = append(e, l4proto(unix.IPPROTO_TCP)...)
	e = append(e, tcpFlagsSyn(tcpSYN|tcpRST)...)
	e = append(e,
		&expr.Rt{Register: reg1, Key: expr.RtTCPMSS},
		&expr.Byteorder{SourceRegister: reg1, DestRegister: reg1, Op: expr.ByteorderHton, Len: 2, Size: 2},
		&expr.Exthdr{Op: expr.ExthdrOpTcpopt, Type: 2, Offset: 2, Len: 2, SourceRegister: reg1},
		&expr.Counter{},
	)
	return e
}

func join(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// render turns a spec into the objects of table inet name.
func render(name string, spec state.NftSpec) (*rendered, error) {
	if name == "" {
		return nil, fmt.Errorf("nft table has no name")
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: name}
	r := &rendered{table: t}
	tag := nftTag(spec)
	accept := nftables.ChainPolicyAccept
	forward := &nftables.Chain{
		Name: nftForward, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	forwardRules := func() []*nftables.Rule {
		return []*nftables.Rule{{Table: t, Chain: forward, Exprs: mssClamp(), UserData: tag}}
	}

	switch spec.Role {
	case "new":
		r.chains = []*nftables.Chain{forward}
		r.rules = forwardRules
		return r, nil
	case "old":
	default:
		return nil, fmt.Errorf("nft spec role %q is not old or new", spec.Role)
	}

	if spec.Mark == 0 {
		return nil, fmt.Errorf("nft spec for role old has no mark")
	}
	if spec.TunnelDev == "" || len(spec.TunnelDev) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("nft spec tunnel device %q is invalid", spec.TunnelDev)
	}
	set4 := &nftables.Set{Table: t, Name: nftSet4, KeyType: svc4Type, Concatenation: true}
	set6 := &nftables.Set{Table: t, Name: nftSet6, KeyType: svc6Type, Concatenation: true}
	var el4, el6 []nftables.SetElement
	seen := map[string]bool{}
	for _, s := range spec.Services {
		key, v6, err := serviceKey(s)
		if err != nil {
			return nil, err
		}
		if seen[string(key)] {
			continue // a set holds each key once
		}
		seen[string(key)] = true
		if v6 {
			el6 = append(el6, nftables.SetElement{Key: key})
		} else {
			el4 = append(el4, nftables.SetElement{Key: key})
		}
	}
	r.sets = []*nftables.Set{set4, set6}
	r.elems = [][]nftables.SetElement{el4, el6}

	prerouting := &nftables.Chain{
		Name: nftPrerouting, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept,
	}
	r.chains = []*nftables.Chain{prerouting, forward}
	m, dev := spec.Mark, spec.TunnelDev
	counter := []expr.Any{&expr.Counter{}}
	r.rules = func() []*nftables.Rule {
		pre := [][]expr.Any{
			// NEW's own outbound flows: their replies must go back to T.
			join(iifname(dev), ctStateNew(), ctMarkOr(m), counter),
			// Nothing else applies to packets from the tunnel.
			join(iifname(dev), []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}),
			// A new TCP flow to a moved service whose first packet is a
			// bare SYN (not a mid-stream pickup) goes to NEW.
			join(ctStateNew(), l4proto(unix.IPPROTO_TCP), tcpFlagsSyn(tcpFIN|tcpSYN|tcpRST|tcpACK), serviceLookup(set4, false), ctMarkOr(m), counter),
			join(ctStateNew(), l4proto(unix.IPPROTO_TCP), tcpFlagsSyn(tcpFIN|tcpSYN|tcpRST|tcpACK), serviceLookup(set6, true), ctMarkOr(m), counter),
			join(ctStateNew(), l4proto(unix.IPPROTO_UDP), serviceLookup(set4, false), ctMarkOr(m), counter),
			join(ctStateNew(), l4proto(unix.IPPROTO_UDP), serviceLookup(set6, true), ctMarkOr(m), counter),
			// Packets of marked flows get the mark (other bits kept), so
			// the fwmark rule routes them into the tunnel.
			{
				&expr.Ct{Register: reg1, Key: expr.CtKeyMARK},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(m), Xor: native32(0)},
				&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: native32(m)},
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1},
				&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: 4, Mask: native32(^m), Xor: native32(m)},
				&expr.Meta{Key: expr.MetaKeyMARK, Register: reg1, SourceRegister: true},
			},
		}
		var rules []*nftables.Rule
		for _, e := range pre {
			rules = append(rules, &nftables.Rule{Table: t, Chain: prerouting, Exprs: e, UserData: tag})
		}
		return append(rules, forwardRules()...)
	}
	return r, nil
}

// RenderRuleCount is the number of rules the spec renders to (0 for an
// invalid spec). It does not depend on the number of services.
func RenderRuleCount(spec state.NftSpec) int {
	r, err := render("count", spec)
	if err != nil {
		return 0
	}
	return len(r.rules())
}

// addTo adds the rendered table to cc's batch.
func (r *rendered) addTo(cc *nftables.Conn) error {
	cc.AddTable(r.table)
	for i, s := range r.sets {
		if err := cc.AddSet(s, nil); err != nil {
			return fmt.Errorf("add set %s: %w", s.Name, err)
		}
		el := r.elems[i]
		for len(el) > 0 {
			n := min(len(el), nftElemChunk)
			if err := cc.SetAddElements(s, el[:n]); err != nil {
				return fmt.Errorf("add elements to set %s: %w", s.Name, err)
			}
			el = el[n:]
		}
	}
	for _, c := range r.chains {
		cc.AddChain(c)
	}
	for _, rule := range r.rules() {
		cc.AddRule(rule)
	}
	return nil
}

func (h *Host) nftStatePath(name string) string {
	return filepath.Join(h.StateDir, "nft-"+name+".json")
}

func (h *Host) loadSavedNft(name string) (*state.NftTable, error) {
	b, err := os.ReadFile(h.nftStatePath(name))
	if err != nil {
		return nil, err
	}
	var t state.NftTable
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("%s: %w", h.nftStatePath(name), err)
	}
	return &t, nil
}

func (h *Host) saveNft(t state.NftTable) error {
	if err := os.MkdirAll(h.StateDir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(t, "", "  ")
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

func findTable(cc *nftables.Conn, name string) (*nftables.Table, error) {
	tables, err := cc.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("list nft tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, nil
}

// nftFacts reads table inet name. It returns the saved table when the
// kernel still holds exactly what migrate wrote, else a placeholder and the
// reason for the drift.
func (h *Host) nftFacts(name string) (*state.NftTable, string, error) {
	cc, err := h.NewNft()
	if err != nil {
		return nil, "", err
	}
	t, err := findTable(cc, name)
	if err != nil || t == nil {
		return nil, "", err
	}
	reason, err := h.nftVerify(cc, t)
	if err != nil {
		return nil, "", err
	}
	if reason != "" {
		return &state.NftTable{Family: "inet", Name: name},
			fmt.Sprintf("table inet %s was changed outside migrate: %s", name, reason), nil
	}
	saved, _ := h.loadSavedNft(name)
	return saved, "", nil
}

// nftVerify compares the kernel's table t with the saved spec. It returns a
// short reason when they differ.
func (h *Host) nftVerify(cc *nftables.Conn, t *nftables.Table) (string, error) {
	chains, err := cc.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return "", fmt.Errorf("list nft chains: %w", err)
	}
	var have []string
	digest := ""
	n := 0
	for _, c := range chains {
		if c.Table.Name != t.Name {
			continue
		}
		have = append(have, c.Name)
		rules, err := cc.GetRules(t, c)
		if err != nil {
			return "", fmt.Errorf("list rules of chain %s: %w", c.Name, err)
		}
		for _, r := range rules {
			n++
			tag, ok := ruleTag(r.UserData)
			if !ok {
				return fmt.Sprintf("rule %d (chain %s, handle %d) has no migrate tag", n, c.Name, r.Handle), nil
			}
			d := strings.TrimPrefix(tag, nftTagPrefix)
			if digest == "" {
				digest = d
			} else if d != digest {
				return fmt.Sprintf("rule %d (chain %s, handle %d) has tag %s, others %s", n, c.Name, r.Handle, d, digest), nil
			}
		}
	}
	if n == 0 {
		return "it has no rules", nil
	}
	saved, err := h.loadSavedNft(t.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return "the agent has no record of what migrate wrote (" + h.nftStatePath(t.Name) + " is missing)", nil
	}
	if err != nil {
		return "the agent's record is unreadable: " + err.Error(), nil
	}
	if saved.Name != t.Name || saved.Family != "inet" {
		return fmt.Sprintf("the agent's record is for table %s %s", saved.Family, saved.Name), nil
	}
	if saved.Spec.Digest() != digest {
		return fmt.Sprintf("rules carry digest %s but migrate last wrote %s", digest, saved.Spec.Digest()), nil
	}
	want, err := render(t.Name, saved.Spec)
	if err != nil {
		return "the agent's record does not render: " + err.Error(), nil
	}
	if wn := len(want.rules()); wn != n {
		return fmt.Sprintf("it has %d rules, migrate wrote %d", n, wn), nil
	}
	var wantChains []string
	for _, c := range want.chains {
		wantChains = append(wantChains, c.Name)
	}
	sort.Strings(have)
	sort.Strings(wantChains)
	if strings.Join(have, ",") != strings.Join(wantChains, ",") {
		return fmt.Sprintf("it has chains [%s], migrate wrote [%s]", strings.Join(have, " "), strings.Join(wantChains, " ")), nil
	}
	return h.nftVerifySets(cc, t, want)
}

// nftVerifySets compares sets and their elements.
func (h *Host) nftVerifySets(cc *nftables.Conn, t *nftables.Table, want *rendered) (string, error) {
	sets, err := cc.GetSets(t)
	if err != nil {
		return "", fmt.Errorf("list nft sets: %w", err)
	}
	if len(sets) != len(want.sets) {
		return fmt.Sprintf("it has %d sets, migrate wrote %d", len(sets), len(want.sets)), nil
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
		elems, err := cc.GetSetElements(s)
		if err != nil {
			return "", fmt.Errorf("list elements of set %s: %w", s.Name, err)
		}
		if len(elems) != len(want.elems[i]) {
			return fmt.Sprintf("set %s has %d elements, migrate wrote %d", s.Name, len(elems), len(want.elems[i])), nil
		}
		wk := map[string]bool{}
		for _, e := range want.elems[i] {
			wk[string(e.Key)] = true
		}
		for _, e := range elems {
			if !wk[string(e.Key)] {
				return fmt.Sprintf("set %s has element %s that migrate did not write", s.Name, hex.EncodeToString(e.Key)), nil
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

// replaceNft makes table inet NAME hold exactly the rendering of t.Spec, in
// one transaction: delete the old table (if any) and add the new one in the
// same batch. The batch carries the ruleset generation read before, so a
// concurrent change makes it fail with ERESTART and it is retried.
func (h *Host) replaceNft(t state.NftTable) error {
	if t.Family != "inet" {
		return fmt.Errorf("nft table family %q: migrate only manages inet tables", t.Family)
	}
	if _, err := render(t.Name, t.Spec); err != nil {
		return err
	}
	if cur, drift, err := h.nftFacts(t.Name); err == nil && drift == "" && cur != nil &&
		(state.Object{Nft: cur}).Equal(state.Object{Nft: &t}) {
		return nil // already there, counters kept
	}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		err = h.flushNft(t)
		if !errors.Is(err, unix.ERESTART) {
			break
		}
	}
	if err != nil {
		return err
	}
	if err := h.saveNft(t); err != nil {
		return fmt.Errorf("nft table applied, but recording it failed: %w", err)
	}
	return nil
}

func (h *Host) flushNft(t state.NftTable) error {
	cc, err := h.NewNft()
	if err != nil {
		return err
	}
	gen, err := cc.GetGen()
	if err != nil {
		return fmt.Errorf("read nft generation: %w", err)
	}
	cur, err := findTable(cc, t.Name)
	if err != nil {
		return err
	}
	r, err := render(t.Name, t.Spec)
	if err != nil {
		return err
	}
	if cur != nil {
		cc.DelTable(r.table)
	}
	if err := r.addTo(cc); err != nil {
		return err
	}
	if err := cc.FlushWithGenID(gen.ID); err != nil {
		return fmt.Errorf("nft transaction: %w", err)
	}
	return nil
}

func (h *Host) deleteNft(t state.NftTable) error {
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

func (h *Host) deleteNftOnce(name string) error {
	cc, err := h.NewNft()
	if err != nil {
		return err
	}
	gen, err := cc.GetGen()
	if err != nil {
		return fmt.Errorf("read nft generation: %w", err)
	}
	cur, err := findTable(cc, name)
	if err != nil || cur == nil {
		return err
	}
	cc.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: name})
	if err := cc.FlushWithGenID(gen.ID); err != nil {
		return fmt.Errorf("nft transaction: %w", err)
	}
	return nil
}
