package agent

import (
	"io/fs"
	"path"
	"sort"
	"strings"

	"github.com/opsmigrate/migrate/state"
)

// The files nftables.service loads (`nft -f FILE` at start, and at
// reload or restart), relative to the host's root: Debian's and Ubuntu's
// unit, and RHEL's and Fedora's (which ships only commented-out includes
// of /etc/nftables/*.nft there).
var nftConfFiles = []string{"etc/nftables.conf", "etc/sysconfig/nftables.conf"}

// How nft finds an included file (nft(8) "INCLUDE FILES", checked with
// nft 1.0.6): an absolute path is itself; a path starting with "./" or
// "../" is relative to nft's working directory, which for
// nftables.service is "/" (systemd's default); any other relative path is
// searched in the include path, "/etc" unless -I says otherwise (nft -h:
// "Default is: /etc"), whatever the including file's directory. A glob
// (* ? [) may match nothing, its matches are read in sorted order, and
// neither a dotfile nor a directory is read; a directory named outright
// includes nothing.
const nftIncludeDir = "etc"

// Bounds: nft itself refuses includes nested more than 16 deep; a file
// including itself twice would still be read 2^16 times, hence the file
// count.
const (
	maxNftConfDepth = 16
	maxNftConfFiles = 256
	maxNftConfBytes = 1 << 20 // of one file; a bigger one is skipped
)

// NftConf reports every declaration of table inet NAME or arp NAME
// (`table inet NAME {`, `add table ...`, `create table ...`, on one line
// or split over several) in the files nftables.service loads, following
// their include statements: copies of migrate's tables that every boot and
// every restart of the service loads again. It reads root as the agent's
// host sees it (the agent runs in the host's mount namespace).
func NftConf(root fs.FS, name string) []state.NftConfTable {
	r := nftConfReader{root: root, name: name}
	for _, f := range nftConfFiles {
		r.read(f, 0)
	}
	return r.found
}

type nftConfReader struct {
	root  fs.FS
	name  string
	files int
	found []state.NftConfTable
}

func (r *nftConfReader) read(file string, depth int) {
	if depth > maxNftConfDepth || r.files >= maxNftConfFiles {
		return
	}
	st, err := fs.Stat(r.root, file)
	if err != nil || !st.Mode().IsRegular() || st.Size() > maxNftConfBytes {
		return
	}
	b, err := fs.ReadFile(r.root, file)
	if err != nil || len(b) > maxNftConfBytes {
		return
	}
	r.files++
	toks := nftTokens(string(b))
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		if t.text == "include" && i+1 < len(toks) && toks[i+1].quoted {
			for _, inc := range r.includes(toks[i+1].text) {
				r.read(inc, depth+1)
			}
			i++
			continue
		}
		if !t.start {
			continue
		}
		j := i
		if toks[j].text == "add" || toks[j].text == "create" {
			j++
		}
		if j+2 < len(toks) && toks[j].text == "table" && !toks[j].quoted {
			fam, name := toks[j+1].text, toks[j+2].text
			d := state.NftConfTable{Family: fam, Name: name, File: "/" + file, Line: toks[j].line}
			if (fam == "inet" || fam == "arp") && name == r.name && !r.seen(d) {
				r.found = append(r.found, d)
			}
		}
	}
}

// seen says whether d was found already: a file included twice (or
// including itself) declares the same table again.
func (r *nftConfReader) seen(d state.NftConfTable) bool {
	for _, f := range r.found {
		if f == d {
			return true
		}
	}
	return false
}

// includes resolves an include statement's path as nft does (see
// nftIncludeDir) to the files it reads, relative to the root.
func (r *nftConfReader) includes(p string) []string {
	switch {
	case strings.HasPrefix(p, "/"):
	case strings.HasPrefix(p, "./"), strings.HasPrefix(p, "../"):
		p = "/" + p // nftables.service runs in "/"
	default:
		p = "/" + nftIncludeDir + "/" + p
	}
	p = strings.TrimPrefix(path.Clean(p), "/")
	if !strings.ContainsAny(p, "*?[") {
		return []string{p}
	}
	matches, err := fs.Glob(r.root, p)
	if err != nil {
		return nil
	}
	sort.Strings(matches)
	var out []string
	for _, m := range matches {
		if !strings.HasPrefix(path.Base(m), ".") {
			out = append(out, m)
		}
	}
	return out
}

// nftToken is a word, a quoted string or one of { } ; of an nft file.
type nftToken struct {
	text   string
	line   int
	quoted bool
	start  bool // first of a statement: after a newline, {, } or ;
}

// nftTokens splits an nft file into tokens, as far as finding table
// declarations and includes needs: # comments to the end of the line,
// "..." strings, a backslash at the end of a line joins it to the next.
func nftTokens(s string) []nftToken {
	var out []nftToken
	line, start := 1, true
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\n':
			line++
			start = true
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\n':
			line++
			i += 2
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '{' || c == '}' || c == ';':
			out = append(out, nftToken{text: string(c), line: line, start: start})
			start = true
			i++
		case c == '"':
			j := strings.IndexAny(s[i+1:], "\"\n")
			if j < 0 {
				j = len(s) - i - 1
			}
			out = append(out, nftToken{text: s[i+1 : i+1+j], line: line, quoted: true, start: start})
			start = false
			i += j + 1
			if i < len(s) && s[i] == '"' {
				i++
			}
		default:
			j := i
			for j < len(s) && !strings.ContainsRune(" \t\r\n{};#\"", rune(s[j])) {
				j++
			}
			out = append(out, nftToken{text: s[i:j], line: line, start: start})
			start = false
			i = j
		}
	}
	return out
}
