package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
)

// Format returns src formatted canonically (hclwrite.Format: arguments
// aligned, indentation normalised, comments kept), for `migrate fmt`. It
// formats only a plan file that parses and validates; otherwise it returns
// the *Error that Parse returns. Format is idempotent.
func Format(src []byte, filename string) ([]byte, error) {
	if _, err := Parse(src, filename); err != nil {
		return nil, err
	}
	return hclwrite.Format(src), nil
}

// RenderOptions adds comments to the plan file that RenderWith writes.
type RenderOptions struct {
	// Header is written as comment lines at the top of the file.
	Header string
	// ServiceComments maps a service name to comment lines written just
	// above its block.
	ServiceComments map[string]string
	// CommentedOut maps a service name to the reason the service is not to
	// be migrated. Its whole block is written commented out, each line
	// prefixed with "# ", preceded by the reason as a comment. It is then
	// not part of the plan (and need not be valid in it, e.g. the SSH
	// service migrate itself uses).
	CommentedOut map[string]string
}

// Render writes c as a canonically formatted plan file: the host blocks,
// the tunnel block (when c.Tunnel is not nil), then the service and forward
// blocks in order. Optional arguments are written only when they differ
// from their defaults; paths under the home directory are written with
// "~/". For a valid c, parsing the result gives c back (except Path and the
// source ranges).
func Render(c *Config) []byte {
	return RenderWith(c, RenderOptions{})
}

// RenderWith is Render with comments; see RenderOptions.
func RenderWith(c *Config, opts RenderOptions) []byte {
	var parts [][]byte
	if opts.Header != "" {
		parts = append(parts, []byte(commentLines(opts.Header)))
	}
	for _, name := range []string{"old", "new"} {
		if h := c.Hosts[name]; h != nil {
			parts = append(parts, renderBlock(func(b *hclwrite.Body) { hostBody(b, h) }, "host", name))
		}
	}
	if t := c.Tunnel; t != nil {
		parts = append(parts, renderBlock(func(b *hclwrite.Body) { tunnelBody(b, t) }, "tunnel"))
	}
	for _, s := range c.Services {
		var out bytes.Buffer
		if comment := opts.ServiceComments[s.Name]; comment != "" {
			out.WriteString(commentLines(comment))
		}
		blk := renderBlock(func(b *hclwrite.Body) { serviceBody(b, s) }, "service", s.Name)
		if reason, ok := opts.CommentedOut[s.Name]; ok {
			if reason != "" {
				out.WriteString(commentLines(reason))
			}
			out.WriteString(commentOut(blk))
		} else {
			out.Write(blk)
		}
		parts = append(parts, out.Bytes())
	}
	for _, f := range c.Forwards {
		parts = append(parts, renderBlock(func(b *hclwrite.Body) { forwardBody(b, f) }, "forward", f.Name))
	}
	return hclwrite.Format(bytes.Join(parts, []byte("\n")))
}

// renderBlock writes one block, formatted, ending in a newline.
func renderBlock(fill func(*hclwrite.Body), typ string, labels ...string) []byte {
	f := hclwrite.NewEmptyFile()
	blk := f.Body().AppendNewBlock(typ, labels)
	fill(blk.Body())
	return hclwrite.Format(f.Bytes())
}

// commentLines turns text into "# " comment lines, keeping lines that are
// already comments.
func commentLines(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		line = strings.TrimRight(line, " \t\r")
		switch {
		case line == "":
			b.WriteString("#\n")
		case strings.HasPrefix(line, "#"):
			b.WriteString(line + "\n")
		default:
			b.WriteString("# " + line + "\n")
		}
	}
	return b.String()
}

// commentOut prefixes every line of a rendered block with "# ".
func commentOut(blk []byte) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(blk), "\n"), "\n") {
		if line == "" {
			b.WriteString("#\n")
		} else {
			b.WriteString("# " + line + "\n")
		}
	}
	return b.String()
}

func setString(b *hclwrite.Body, name, v string) {
	b.SetAttributeValue(name, cty.StringVal(v))
}

func setInt(b *hclwrite.Body, name string, v int64) {
	b.SetAttributeValue(name, cty.NumberIntVal(v))
}

func setAddr(b *hclwrite.Body, name string, a netip.Addr) {
	if a.IsValid() {
		setString(b, name, a.String())
	}
}

func hostBody(b *hclwrite.Body, h *Host) {
	port := h.Port
	if port == 0 {
		port = DefaultSSHPort
	}
	host := h.Address
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if h.SSH != "" {
		// Written as a name ~/.ssh/config completes: keep it so.
		setString(b, "ssh", h.SSH)
	} else {
		setString(b, "ssh", fmt.Sprintf("%s@%s:%d", h.User, host, port))
	}
	if h.IdentityFile != "" {
		setString(b, "identity_file", homeShort(h.IdentityFile))
	}
	if def, _ := expandHome(DefaultKnownHosts); h.KnownHosts != "" && h.KnownHosts != def {
		setString(b, "known_hosts", homeShort(h.KnownHosts))
	}
	if h.Sudo {
		b.SetAttributeValue("sudo", cty.True)
	}
}

// homeShort writes a path under the home directory with "~/", the way a
// plan file is usually written; parsing expands it back.
func homeShort(path string) string {
	home, err := os.UserHomeDir()
	if err != nil || home == "" || home == "/" {
		return path
	}
	home = strings.TrimRight(home, "/")
	if rest, ok := strings.CutPrefix(path, home+"/"); ok && rest != "" && !strings.HasPrefix(rest, "/") {
		if short := "~/" + rest; mustExpand(short) == path {
			return short
		}
	}
	return path
}

func mustExpand(path string) string {
	p, _ := expandHome(path)
	return p
}

func tunnelBody(b *hclwrite.Body, t *Tunnel) {
	if t.Type != "" {
		setString(b, "type", string(t.Type))
	}
	setAddr(b, "old_endpoint", t.OldEndpoint)
	setAddr(b, "new_endpoint", t.NewEndpoint)
	if t.OldBind.IsValid() {
		setAddr(b, "old_bind", t.OldBind)
	}
	if t.NewBind.IsValid() {
		setAddr(b, "new_bind", t.NewBind)
	}
	if t.Name != "" && t.Name != DefaultTunnelName {
		setString(b, "name", t.Name)
	}
	if t.MTU != 0 {
		setInt(b, "mtu", int64(t.MTU))
	}
	switch t.Type {
	case "vxlan":
		if t.VNI != 0 && t.VNI != DefaultVNI {
			setInt(b, "vni", int64(t.VNI))
		}
		if t.Port != 0 && t.Port != DefaultVXLANPort {
			setInt(b, "port", int64(t.Port))
		}
	case "gre", "ip6gre":
		if t.Key != 0 {
			setInt(b, "key", int64(t.Key))
		}
	case "wireguard":
		if t.ListenPort != 0 && t.ListenPort != DefaultWGPort {
			setInt(b, "listen_port", int64(t.ListenPort))
		}
	}
	if t.OldInner.IsValid() && t.OldInner != DefaultOldInner {
		setString(b, "old_inner", t.OldInner.String())
	}
	if t.NewInner.IsValid() && t.NewInner != DefaultNewInner {
		setString(b, "new_inner", t.NewInner.String())
	}
	if t.Mark != 0 && t.Mark != DefaultMark {
		setString(b, "mark", fmt.Sprintf("%#x", t.Mark))
	}
	if t.Table != 0 && t.Table != DefaultTable {
		setInt(b, "table", int64(t.Table))
	}
}

// portsValue writes single ports as numbers and ranges as "a-b" strings.
func portsValue(ports []PortRange) cty.Value {
	if len(ports) == 0 {
		return cty.EmptyTupleVal
	}
	vals := make([]cty.Value, 0, len(ports))
	for _, r := range ports {
		if r.From == r.To {
			vals = append(vals, cty.NumberIntVal(int64(r.From)))
		} else {
			vals = append(vals, cty.StringVal(r.String()))
		}
	}
	return cty.TupleVal(vals)
}

func serviceBody(b *hclwrite.Body, s *Service) {
	setAddr(b, "address", s.Address)
	if s.Protocol != "" {
		setString(b, "protocol", string(s.Protocol))
	}
	b.SetAttributeValue("ports", portsValue(s.Ports))
	if s.Stage != "" {
		setString(b, "stage", s.Stage)
	}
	if s.CanaryPercent != 0 {
		setInt(b, "canary_percent", int64(s.CanaryPercent))
	}
	if s.AllowSSHMove {
		b.SetAttributeValue("allow_ssh_move", cty.True)
	}
	if s.AllowUnready {
		b.SetAttributeValue("allow_unready", cty.True)
	}
}

func forwardBody(b *hclwrite.Body, f *Forward) {
	if f.On != "" {
		setString(b, "on", string(f.On))
	}
	setAddr(b, "address", f.Address)
	if f.Protocol != "" {
		setString(b, "protocol", string(f.Protocol))
	}
	b.SetAttributeValue("ports", portsValue(f.Ports))
	setAddr(b, "to", f.To)
	if f.ToPort != 0 {
		setInt(b, "to_port", int64(f.ToPort))
	}
}
