// Package sshconfig reads the parts of an OpenSSH client configuration
// (~/.ssh/config) that migrate uses to reach a host: Host blocks with
// patterns, Include, HostName, User, Port, IdentityFile, ProxyJump and
// UserKnownHostsFile, with OpenSSH's first-obtained-value-wins rule.
//
// It is a small parser of its own, not a full ssh_config implementation:
//
//   - Match blocks are not evaluated. Their contents are ignored, as if the
//     Match condition never held. (Evaluating "Match exec" or "Match host"
//     after canonicalisation would need most of ssh itself.)
//   - ProxyCommand is refused with an error when it applies to a host:
//     migrate cannot run it, and connecting directly instead would be a
//     surprise.
//   - Every other keyword is ignored.
//
// The package is a leaf (no imports from migrate), so that both the plan
// parser and the SSH dialer can use it.
package sshconfig

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// EnvPath names the environment variable that overrides the location of
// the configuration file (~/.ssh/config by default).
const EnvPath = "MIGRATE_SSH_CONFIG"

// maxIncludeDepth matches OpenSSH's READCONF_MAX_DEPTH.
const maxIncludeDepth = 16

// Config is a parsed configuration, Include files expanded in place.
type Config struct {
	// Path is the top file ("" when there was none).
	Path       string
	directives []directive
	// unevaluated: Match blocks that set keywords migrate reads, in file
	// order (see Unevaluated).
	unevaluated []*matchBlock
}

// matchBlock is a Match line and the keywords migrate reads that its
// block sets.
type matchBlock struct {
	where, text string
	keys        []string
}

// readKeys are the keywords Lookup uses, as ssh_config spells them.
var readKeys = map[string]string{
	"hostname": "HostName", "user": "User", "port": "Port", "identityfile": "IdentityFile",
	"proxyjump": "ProxyJump", "proxycommand": "ProxyCommand", "userknownhostsfile": "UserKnownHostsFile",
}

// Unevaluated lists the Match blocks that set something migrate would use
// ("FILE:LINE: Match host x sets User, ProxyJump"). migrate does not
// evaluate Match, so where ssh applies such a block, migrate connects
// differently; the CLI says so rather than stay silent.
func (c *Config) Unevaluated() []string {
	if c == nil {
		return nil
	}
	var out []string
	for _, m := range c.unevaluated {
		out = append(out, fmt.Sprintf("%s: Match %s sets %s", m.where, m.text, strings.Join(m.keys, ", ")))
	}
	return out
}

type directive struct {
	key   string // lower case
	args  []string
	conds []cond // all must hold
	file  string
	line  int
}

// cond is one Host line (or a Match line, which never holds).
type cond struct {
	never    bool
	patterns []string
	match    *matchBlock // the Match line, for never
}

// Where is FILE:LINE of the directive.
func (d directive) where() string { return fmt.Sprintf("%s:%d", d.file, d.line) }

// DefaultPath is $MIGRATE_SSH_CONFIG when set, else ~/.ssh/config.
func DefaultPath() string {
	if p := os.Getenv(EnvPath); p != "" {
		return p
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return ""
	}
	return filepath.Join(home, ".ssh", "config")
}

// Load reads DefaultPath. A missing file is an empty configuration.
func Load() (*Config, error) {
	p := DefaultPath()
	if p == "" {
		return &Config{}, nil
	}
	c, err := ParseFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, nil
	}
	return c, err
}

// ParseFile parses the file at path. Relative Include paths are taken
// relative to ~/.ssh, as ssh does for the user's configuration.
func ParseFile(path string) (*Config, error) {
	c := &Config{Path: path}
	if err := c.parseFile(path, 0, nil); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse parses src as if read from a file named name.
func Parse(src, name string) (*Config, error) {
	c := &Config{Path: name}
	if err := c.parseText(src, name, 0, nil); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) parseFile(path string, depth int, outer []cond) error {
	b, err := os.ReadFile(path)
	if err != nil {
		if depth == 0 {
			return err
		}
		return fmt.Errorf("ssh config: %w", err)
	}
	return c.parseText(string(b), path, depth, outer)
}

func (c *Config) parseText(src, file string, depth int, outer []cond) error {
	cur := outer
	for i, raw := range strings.Split(src, "\n") {
		lineNo := i + 1
		key, args, err := splitLine(raw)
		if err != nil {
			return fmt.Errorf("%s:%d: %v", file, lineNo, err)
		}
		if key == "" {
			continue
		}
		switch key {
		case "host":
			if len(args) == 0 {
				return fmt.Errorf("%s:%d: Host needs at least one pattern", file, lineNo)
			}
			cur = append(append([]cond(nil), outer...), cond{patterns: args})
		case "match":
			// Not evaluated: see the package comment.
			m := &matchBlock{where: fmt.Sprintf("%s:%d", file, lineNo), text: strings.Join(args, " ")}
			cur = append(append([]cond(nil), outer...), cond{never: true, match: m})
		case "include":
			if depth+1 > maxIncludeDepth {
				return fmt.Errorf("%s:%d: Include nested more than %d deep", file, lineNo, maxIncludeDepth)
			}
			if len(args) == 0 {
				return fmt.Errorf("%s:%d: Include needs a file", file, lineNo)
			}
			for _, a := range args {
				pat, err := expandHomeOnly(a)
				if err != nil {
					return fmt.Errorf("%s:%d: Include %s: %v", file, lineNo, a, err)
				}
				if !filepath.IsAbs(pat) {
					home, err := os.UserHomeDir()
					if err != nil || home == "" {
						return fmt.Errorf("%s:%d: Include %s: the home directory is unknown", file, lineNo, a)
					}
					pat = filepath.Join(home, ".ssh", pat)
				}
				matches, err := filepath.Glob(pat)
				if err != nil {
					return fmt.Errorf("%s:%d: Include %s: %v", file, lineNo, a, err)
				}
				// A pattern matching nothing is not an error (as in ssh).
				for _, m := range matches {
					if err := c.parseFile(m, depth+1, cur); err != nil {
						return err
					}
				}
			}
		default:
			c.directives = append(c.directives, directive{key: key, args: args, conds: cur, file: file, line: lineNo})
			c.noteUnevaluated(cur, key)
		}
	}
	return nil
}

// noteUnevaluated records key under the Match block of conds, if any, when
// it is a keyword migrate reads.
func (c *Config) noteUnevaluated(conds []cond, key string) {
	name, read := readKeys[key]
	if !read {
		return
	}
	for _, cd := range conds {
		m := cd.match
		if m == nil {
			continue
		}
		if len(m.keys) == 0 {
			c.unevaluated = append(c.unevaluated, m)
		}
		for _, k := range m.keys {
			if k == name {
				return
			}
		}
		m.keys = append(m.keys, name)
		return
	}
}

// splitLine returns the lower-case keyword and the arguments of one line;
// "" for a blank or comment line. "Key value", "Key=value" and
// "Key = value" are the same; arguments may be double-quoted; an argument
// starting with # starts a comment.
func splitLine(raw string) (string, []string, error) {
	s := strings.TrimSpace(raw)
	if s == "" || s[0] == '#' {
		return "", nil, nil
	}
	end := strings.IndexAny(s, " \t=")
	if end < 0 {
		return strings.ToLower(s), nil, nil
	}
	key := strings.ToLower(s[:end])
	rest := strings.TrimLeft(s[end:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	var args []string
	for rest != "" {
		if rest[0] == '#' {
			break
		}
		var arg string
		if rest[0] == '"' {
			close := strings.IndexByte(rest[1:], '"')
			if close < 0 {
				return "", nil, errors.New("unterminated quote")
			}
			arg, rest = rest[1:1+close], rest[2+close:]
		} else {
			n := strings.IndexAny(rest, " \t")
			if n < 0 {
				n = len(rest)
			}
			arg, rest = rest[:n], rest[n:]
		}
		args = append(args, arg)
		rest = strings.TrimLeft(rest, " \t")
	}
	return key, args, nil
}

// matchPattern matches s against an ssh pattern with * and ?.
func matchPattern(pat, s string) bool {
	for len(pat) > 0 {
		switch pat[0] {
		case '*':
			for len(pat) > 0 && pat[0] == '*' {
				pat = pat[1:]
			}
			if pat == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if matchPattern(pat, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pat[0] {
				return false
			}
		}
		pat, s = pat[1:], s[1:]
	}
	return s == ""
}

// matches reports whether host matches a Host line: some positive pattern
// matches and no negated one does (a negated match rules the line out).
func (c cond) matches(host string) bool {
	if c.never {
		return false
	}
	host = strings.ToLower(host)
	ok := false
	for _, p := range c.patterns {
		p = strings.ToLower(p)
		if strings.HasPrefix(p, "!") {
			if matchPattern(p[1:], host) {
				return false
			}
			continue
		}
		if matchPattern(p, host) {
			ok = true
		}
	}
	return ok
}

// Hop is one ProxyJump host as written: [user@]host[:port].
type Hop struct {
	User string // "" when not given
	Host string
	Port int // 0 when not given
}

func (h Hop) String() string {
	s := h.Host
	if strings.Contains(s, ":") {
		s = "[" + s + "]"
	}
	if h.User != "" {
		s = h.User + "@" + s
	}
	if h.Port != 0 {
		s += ":" + strconv.Itoa(h.Port)
	}
	return s
}

// ParseJump parses a ProxyJump value: "none" (no hops) or a comma list of
// [user@]host[:port] (IPv6 in brackets).
func ParseJump(v string) ([]Hop, error) {
	if strings.EqualFold(v, "none") {
		return []Hop{}, nil
	}
	var out []Hop
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("empty hop in ProxyJump %q", v)
		}
		if strings.Contains(part, "://") {
			return nil, fmt.Errorf("ProxyJump %q: ssh:// URIs are not supported; write [user@]host[:port]", v)
		}
		var h Hop
		rest := part
		if i := strings.LastIndex(rest, "@"); i >= 0 {
			h.User, rest = rest[:i], rest[i+1:]
			if h.User == "" {
				return nil, fmt.Errorf("ProxyJump %q: empty user", v)
			}
		}
		host, port := rest, ""
		if strings.HasPrefix(rest, "[") {
			end := strings.Index(rest, "]")
			if end < 0 {
				return nil, fmt.Errorf("ProxyJump %q: missing ]", v)
			}
			host = rest[1:end]
			after := rest[end+1:]
			if after != "" {
				if after[0] != ':' {
					return nil, fmt.Errorf("ProxyJump %q: unexpected text after ]", v)
				}
				port = after[1:]
			}
		} else if strings.Count(rest, ":") == 1 {
			host, port, _ = strings.Cut(rest, ":")
		}
		if host == "" {
			return nil, fmt.Errorf("ProxyJump %q: empty host", v)
		}
		h.Host = host
		if port != "" {
			n, err := strconv.Atoi(port)
			if err != nil || n < 1 || n > 65535 {
				return nil, fmt.Errorf("ProxyJump %q: invalid port %q", v, port)
			}
			h.Port = n
		}
		out = append(out, h)
	}
	return out, nil
}

// Host is what the configuration says about one host name. Empty or zero
// fields were not set.
type Host struct {
	// Name is the name looked up (the alias as written).
	Name     string
	HostName string // %h expanded
	User     string
	Port     int
	// IdentityFiles, in order, with ~ and the %d %u %l %h %r %% tokens not
	// yet expanded (they need the final user); see ExpandPath.
	IdentityFiles []string
	// ProxyJump is nil when unset, empty for "none".
	ProxyJump []Hop
	// UserKnownHostsFile is the first file given, not expanded.
	UserKnownHostsFile string
	// Sources maps a key (lower case) to FILE:LINE of the value used.
	Sources map[string]string
}

// Lookup returns the settings that apply to name, first value wins.
func (c *Config) Lookup(name string) (Host, error) {
	h := Host{Name: name, Sources: map[string]string{}}
	if c == nil {
		return h, nil
	}
	set := func(key string, d directive) bool {
		if _, done := h.Sources[key]; done {
			return false
		}
		h.Sources[key] = d.where()
		return true
	}
	for _, d := range c.directives {
		ok := true
		for _, cd := range d.conds {
			if !cd.matches(name) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		need := func(n int) error {
			if len(d.args) < n {
				return fmt.Errorf("%s: %s needs a value", d.where(), d.key)
			}
			return nil
		}
		switch d.key {
		case "hostname":
			if err := need(1); err != nil {
				return h, err
			}
			if set(d.key, d) {
				v, err := expandTokens(d.args[0], map[byte]string{'h': name})
				if err != nil {
					return h, fmt.Errorf("%s: HostName %s: %v", d.where(), d.args[0], err)
				}
				h.HostName = v
			}
		case "user":
			if err := need(1); err != nil {
				return h, err
			}
			if set(d.key, d) {
				h.User = d.args[0]
			}
		case "port":
			if err := need(1); err != nil {
				return h, err
			}
			n, err := strconv.Atoi(d.args[0])
			if err != nil || n < 1 || n > 65535 {
				return h, fmt.Errorf("%s: invalid Port %q", d.where(), d.args[0])
			}
			if set(d.key, d) {
				h.Port = n
			}
		case "identityfile":
			// Several IdentityFile lines add up.
			if err := need(1); err != nil {
				return h, err
			}
			if _, done := h.Sources[d.key]; !done {
				h.Sources[d.key] = d.where()
			}
			h.IdentityFiles = append(h.IdentityFiles, d.args[0])
		case "proxyjump":
			if err := need(1); err != nil {
				return h, err
			}
			if _, done := h.Sources[d.key]; done {
				continue
			}
			hops, err := ParseJump(d.args[0])
			if err != nil {
				return h, fmt.Errorf("%s: %v", d.where(), err)
			}
			set(d.key, d)
			h.ProxyJump = hops
		case "userknownhostsfile":
			if err := need(1); err != nil {
				return h, err
			}
			if set(d.key, d) {
				h.UserKnownHostsFile = d.args[0]
			}
		case "proxycommand":
			if len(d.args) == 1 && strings.EqualFold(d.args[0], "none") {
				set(d.key, d)
				continue
			}
			if _, done := h.Sources[d.key]; !done {
				return h, fmt.Errorf("%s: ProxyCommand applies to host %s, and migrate does not run ProxyCommand; use ProxyJump, or add `ProxyCommand none` in a Host %s block above it", d.where(), name, name)
			}
		}
	}
	return h, nil
}

// LocalUser is the name of the user running migrate.
func LocalUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}

// ExpandPath expands a leading ~ and the tokens %d (home), %u (local user),
// %l (local host name), %h (remote host name), %r (remote user) and %%
// in an IdentityFile or UserKnownHostsFile value.
func ExpandPath(p, host, remoteUser string) (string, error) {
	p, err := expandHomeOnly(p)
	if err != nil {
		return "", err
	}
	home, _ := os.UserHomeDir()
	local, _ := os.Hostname()
	if i := strings.IndexByte(local, '.'); i >= 0 {
		local = local[:i]
	}
	return expandTokens(p, map[byte]string{'d': home, 'u': LocalUser(), 'l': local, 'h': host, 'r': remoteUser})
}

func expandHomeOnly(p string) (string, error) {
	if p == "~" || strings.HasPrefix(p, "~/") {
		home, err := os.UserHomeDir()
		if err != nil || home == "" {
			return "", errors.New("cannot expand ~: the home directory is unknown")
		}
		return filepath.Join(home, p[1:]), nil
	}
	if strings.HasPrefix(p, "~") {
		return "", errors.New(`only "~/" is expanded, not ~user`)
	}
	return p, nil
}

func expandTokens(s string, vars map[byte]string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 >= len(s) {
			return "", errors.New("% at the end")
		}
		i++
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := vars[s[i]]
		if !ok {
			return "", fmt.Errorf("token %%%c is not supported here", s[i])
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// HostPort joins host and port for messages and dialling.
func HostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }
