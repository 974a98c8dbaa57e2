package config

import (
	"fmt"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"

	"github.com/opsmigrate/migrate/remote/sshconfig"
)

// Allowed keys, in the order they are listed in error messages.
var (
	topBlocks   = []string{"host", "tunnel", "service", "forward"}
	hostArgs    = []string{"ssh", "identity_file", "known_hosts", "sudo"}
	tunnelArgs  = []string{"type", "old_endpoint", "new_endpoint", "old_bind", "new_bind", "name", "mtu", "vni", "port", "key", "listen_port", "old_inner", "new_inner", "mark", "table"}
	serviceArgs = []string{"address", "protocol", "ports", "stage", "canary_percent", "allow_unready", "allow_ssh_move"}
	forwardArgs = []string{"on", "address", "protocol", "ports", "to", "to_port"}
)

// notYetBlocks are block types from the design that are not implemented.
var notYetBlocks = map[string]bool{}

type parser struct {
	filename string
	diags    hcl.Diagnostics

	// The OpenSSH client configuration, read on first use.
	sshcfg       *sshconfig.Config
	sshcfgErr    error
	sshcfgLoaded bool
}

func (p *parser) add(rng hcl.Range, summary, detail string) {
	r := rng
	p.diags = append(p.diags, &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  summary,
		Detail:   detail,
		Subject:  &r,
	})
}

func (p *parser) fileStart() hcl.Range {
	return hcl.Range{Filename: p.filename, Start: hcl.InitialPos, End: hcl.InitialPos}
}

// pos renders a range's start as FILE:LINE:COL, for pointing at an earlier
// definition from an error message.
func pos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// serviceInfo keeps what the cross checks need about a service block.
// Address, Protocol and Stage of svc are set only when they are valid.
type serviceInfo struct {
	svc        *Service
	order      int         // among services and forwards, in file order
	portRanges []hcl.Range // parallel to svc.Ports
	defRange   hcl.Range   // of the block header
}

// forwardInfo keeps what the cross checks need about a forward block.
// On, Address and Protocol of fwd are set only when they are valid.
type forwardInfo struct {
	fwd        *Forward
	order      int         // among services and forwards, in file order
	portRanges []hcl.Range // parallel to fwd.Ports
}

type fileState struct {
	hosts         map[string]*Host
	hostBlocks    map[string]*hclsyntax.Block
	tunnel        *Tunnel
	tunnelBlock   *hclsyntax.Block
	services      []*serviceInfo
	byName        map[string]*serviceInfo
	forwards      []*forwardInfo
	forwardByName map[string]*forwardInfo
	claimBlocks   int // service and forward blocks seen so far
}

func (p *parser) file(body *hclsyntax.Body) *Config {
	for _, attr := range sortedAttributes(body.Attributes) {
		p.add(attr.NameRange,
			fmt.Sprintf("unknown argument %q at the top level", attr.Name),
			"the top level takes only blocks: "+strings.Join(topBlocks, ", "))
	}

	st := &fileState{
		hosts:         map[string]*Host{},
		hostBlocks:    map[string]*hclsyntax.Block{},
		byName:        map[string]*serviceInfo{},
		forwardByName: map[string]*forwardInfo{},
	}
	for _, blk := range body.Blocks {
		switch blk.Type {
		case "host":
			p.hostBlock(st, blk)
		case "tunnel":
			p.tunnelBlock(st, blk)
		case "service":
			p.serviceBlock(st, blk)
		case "forward":
			p.forwardBlock(st, blk)
		default:
			if notYetBlocks[blk.Type] {
				p.add(blk.TypeRange,
					fmt.Sprintf("%s blocks are not supported yet", blk.Type),
					"remove it; supported blocks: "+strings.Join(topBlocks, ", "))
				continue
			}
			p.add(blk.TypeRange,
				fmt.Sprintf("unknown block type %q", blk.Type),
				"allowed: "+strings.Join(topBlocks, ", ")+didYouMean(blk.Type, topBlocks))
		}
	}

	for _, name := range []string{"old", "new"} {
		if st.hosts[name] == nil && st.hostBlocks[name] == nil {
			p.add(p.fileStart(),
				fmt.Sprintf("missing host %q block", name),
				fmt.Sprintf(`add host %q { ssh = "root@192.0.2.1" }`, name))
		}
	}
	if st.tunnelBlock == nil && len(st.services) > 0 {
		// Forwards alone need no tunnel; services are carried by it.
		first := st.services[0]
		p.add(first.defRange, "services need a tunnel block",
			fmt.Sprintf(`%s moves traffic to NEW through the tunnel; add tunnel { type = "vxlan", old_endpoint = "...", new_endpoint = "..." }`,
				blockName("service", first.svc.Name)))
	}

	p.checkOverlaps(st)
	p.checkSelfCut(st)
	p.checkNATService(st)

	return &Config{
		Path:     p.filename,
		Hosts:    st.hosts,
		Tunnel:   st.tunnel,
		Services: servicesOf(st.services),
		Forwards: forwardsOf(st.forwards),
	}
}

// blockName is how messages name a block: `service "smtp"`, or `service`
// when the block has no name.
func blockName(kind, name string) string {
	if name == "" {
		return kind
	}
	return fmt.Sprintf("%s %q", kind, name)
}

func forwardsOf(infos []*forwardInfo) []*Forward {
	var out []*Forward
	for _, fi := range infos {
		out = append(out, fi.fwd)
	}
	return out
}

func servicesOf(infos []*serviceInfo) []*Service {
	out := make([]*Service, 0, len(infos))
	for _, si := range infos {
		out = append(out, si.svc)
	}
	return out
}

func sortedAttributes(attrs hclsyntax.Attributes) []*hclsyntax.Attribute {
	out := make([]*hclsyntax.Attribute, 0, len(attrs))
	for _, a := range attrs {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].SrcRange.Start.Byte < out[j].SrcRange.Start.Byte
	})
	return out
}

// attrSet decodes the arguments of one block. Unknown arguments and nested
// blocks are reported when it is created.
type attrSet struct {
	p     *parser
	ctx   string // e.g. `service "smtp"`, used in messages
	blk   *hclsyntax.Block
	attrs hclsyntax.Attributes
	nulls map[string]bool
}

func (p *parser) attrSet(blk *hclsyntax.Block, ctx string, allowed []string) *attrSet {
	for _, nb := range blk.Body.Blocks {
		p.add(nb.TypeRange,
			fmt.Sprintf("unexpected block %q in %s", nb.Type, ctx),
			fmt.Sprintf("%s blocks take only arguments: %s", blk.Type, strings.Join(allowed, ", ")))
	}
	known := map[string]bool{}
	for _, k := range allowed {
		known[k] = true
	}
	for _, attr := range sortedAttributes(blk.Body.Attributes) {
		if !known[attr.Name] {
			p.add(attr.NameRange,
				fmt.Sprintf("unknown argument %q in %s", attr.Name, ctx),
				"allowed: "+strings.Join(allowed, ", ")+didYouMean(attr.Name, allowed))
		}
	}
	return &attrSet{p: p, ctx: ctx, blk: blk, attrs: blk.Body.Attributes, nulls: map[string]bool{}}
}

// has reports whether the argument is written, even as null or with errors.
func (a *attrSet) has(name string) bool {
	_, ok := a.attrs[name]
	return ok
}

// absent reports whether the argument is not written or is null; call it
// after reading the value.
func (a *attrSet) absent(name string) bool {
	return !a.has(name) || a.nulls[name]
}

// required reports a missing argument; call it after a read that failed.
func (a *attrSet) required(name, example string) {
	if a.absent(name) {
		a.missing(name, example)
	}
}

// nameRange is the range of the argument's name.
func (a *attrSet) nameRange(name string) hcl.Range {
	return a.attrs[name].NameRange
}

// value evaluates an argument. ok is false when it is absent, null, or its
// expression has errors (which are then reported).
func (a *attrSet) value(name string) (cty.Value, hcl.Range, bool) {
	attr, ok := a.attrs[name]
	if !ok {
		return cty.NilVal, hcl.Range{}, false
	}
	rng := attr.Expr.Range()
	v, diags := attr.Expr.Value(nil)
	if diags.HasErrors() {
		a.p.diags = append(a.p.diags, diags...)
		return cty.NilVal, rng, false
	}
	if v.IsNull() || !v.IsWhollyKnown() {
		a.nulls[name] = true
		return cty.NilVal, rng, false
	}
	v, _ = v.Unmark()
	return v, rng, true
}

func (a *attrSet) missing(name, example string) {
	a.p.add(a.blk.DefRange(),
		fmt.Sprintf("missing required argument %q in %s", name, a.ctx),
		"add "+example)
}

// str reads a string argument. example is a valid assignment for messages.
func (a *attrSet) str(name, example string) (string, hcl.Range, bool) {
	v, rng, ok := a.value(name)
	if !ok {
		return "", rng, false
	}
	if v.Type() != cty.String {
		a.p.add(rng,
			fmt.Sprintf("%s in %s must be a string, not %s", name, a.ctx, v.Type().FriendlyName()),
			"write it in quotes, e.g. "+example)
		return "", rng, false
	}
	return v.AsString(), rng, true
}

func (a *attrSet) boolean(name string) (bool, hcl.Range, bool) {
	v, rng, ok := a.value(name)
	if !ok {
		return false, rng, false
	}
	if v.Type() != cty.Bool {
		a.p.add(rng,
			fmt.Sprintf("%s in %s must be true or false, not %s", name, a.ctx, v.Type().FriendlyName()),
			fmt.Sprintf("write %s = true or %s = false, without quotes", name, name))
		return false, rng, false
	}
	return v.True(), rng, true
}

// intIn reads a whole number in lo..hi. rule describes the valid values.
func (a *attrSet) intIn(name string, lo, hi int64, rule string) (int64, hcl.Range, bool) {
	v, rng, ok := a.value(name)
	if !ok {
		return 0, rng, false
	}
	if v.Type() != cty.Number {
		a.p.add(rng,
			fmt.Sprintf("%s in %s must be a number, not %s", name, a.ctx, v.Type().FriendlyName()),
			rule)
		return 0, rng, false
	}
	n, ok := wholeNumber(v.AsBigFloat(), lo, hi)
	if !ok {
		a.p.add(rng, fmt.Sprintf("invalid %s %s in %s", name, numText(v.AsBigFloat()), a.ctx), rule)
		return 0, rng, false
	}
	return n, rng, true
}

// uint32Arg reads a number, or a string holding a decimal or 0x-prefixed
// hexadecimal number, in lo..0xffffffff.
func (a *attrSet) uint32Arg(name string, lo uint64, rule string) (uint32, hcl.Range, bool) {
	v, rng, ok := a.value(name)
	if !ok {
		return 0, rng, false
	}
	bad := func(shown string) (uint32, hcl.Range, bool) {
		a.p.add(rng, fmt.Sprintf("invalid %s %s in %s", name, shown, a.ctx), rule)
		return 0, rng, false
	}
	var n uint64
	switch v.Type() {
	case cty.Number:
		i, ok := wholeNumber(v.AsBigFloat(), int64(lo), 0xffffffff)
		if !ok {
			return bad(numText(v.AsBigFloat()))
		}
		n = uint64(i)
	case cty.String:
		s := v.AsString()
		var err error
		switch {
		case strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X"):
			if !isHex(s[2:]) {
				return bad(strconv.Quote(s))
			}
			n, err = strconv.ParseUint(s[2:], 16, 32)
		case isDigits(s):
			n, err = strconv.ParseUint(s, 10, 32)
		default:
			return bad(strconv.Quote(s))
		}
		if err != nil || n < lo {
			return bad(strconv.Quote(s))
		}
	default:
		a.p.add(rng,
			fmt.Sprintf("%s in %s must be a number, not %s", name, a.ctx, v.Type().FriendlyName()),
			rule)
		return 0, rng, false
	}
	return uint32(n), rng, true
}

// wholeNumber returns f as an int64 if it is a whole number in lo..hi.
func wholeNumber(f *big.Float, lo, hi int64) (int64, bool) {
	if !f.IsInt() {
		return 0, false
	}
	n, acc := f.Int64()
	if acc != big.Exact || n < lo || n > hi {
		return 0, false
	}
	return n, true
}

func numText(f *big.Float) string {
	return f.Text('f', -1)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// didYouMean returns `; did you mean "x"?` when one allowed name is close to
// the given one, else "".
func didYouMean(given string, allowed []string) string {
	best, bestDist := "", 3
	for _, s := range allowed {
		if d := editDistance(strings.ToLower(given), s); d < bestDist {
			best, bestDist = s, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
