package agent

import (
	"bufio"
	"io"
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
// count; and what is read in all. A saved copy of a big migration's table
// is large (every service in several sets: a few MiB for 10 000), so the
// files are scanned as a stream, keeping only the first words of each
// statement.
const (
	maxNftConfDepth = 16
	maxNftConfFiles = 256
	maxNftConfBytes = 64 << 20
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
	bytes int64
	found []state.NftConfTable
}

func (r *nftConfReader) read(file string, depth int) {
	if depth > maxNftConfDepth || r.files >= maxNftConfFiles || r.bytes >= maxNftConfBytes {
		return
	}
	f, err := r.root.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return
	}
	r.files++
	nftStatements(bufio.NewReaderSize(budgetReader{r: f, used: &r.bytes}, 64<<10), func(st []nftToken) {
		switch {
		case len(st) >= 2 && st[0].text == "include" && !st[0].quoted && st[1].quoted:
			for _, inc := range r.includes(st[1].text) {
				r.read(inc, depth+1)
			}
			return
		case len(st) >= 4 && (st[0].text == "add" || st[0].text == "create"):
			st = st[1:]
		}
		if len(st) < 3 || st[0].text != "table" || st[0].quoted {
			return
		}
		d := state.NftConfTable{Family: st[1].text, Name: st[2].text, File: "/" + file, Line: st[0].line}
		if (d.Family == "inet" || d.Family == "arp") && d.Name == r.name && !r.seen(d) {
			r.found = append(r.found, d)
		}
	})
}

// budgetReader reads from r until the reader's byte budget, shared by
// every file it reads, is spent.
type budgetReader struct {
	r    io.Reader
	used *int64
}

func (b budgetReader) Read(p []byte) (int, error) {
	left := maxNftConfBytes - *b.used
	if left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := b.r.Read(p)
	*b.used += int64(n)
	return n, err
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

// nftToken is a word or a quoted string of an nft file.
type nftToken struct {
	text   string
	line   int
	quoted bool
}

// maxStatementTokens is how many of a statement's first tokens
// nftStatements keeps: `add table inet NAME` is the longest form read.
const maxStatementTokens = 4

// nftStatements reads an nft file and calls each with the first tokens of
// every statement, as far as finding table declarations and includes
// needs: a statement ends at a newline, {, } or ;, # comments run to the
// end of the line, "..." is a string, a backslash at the end of a line
// joins it to the next. Words are cut at 256 bytes (names are shorter).
func nftStatements(in io.ByteReader, each func([]nftToken)) {
	var st []nftToken
	var word []byte
	line, wordLine := 1, 0
	quoted, inWord, inComment, inString := false, false, false, false
	flushWord := func() {
		if inWord && len(st) < maxStatementTokens {
			st = append(st, nftToken{text: string(word), line: wordLine, quoted: quoted})
		}
		word, inWord, quoted = word[:0], false, false
	}
	end := func() {
		flushWord()
		if len(st) > 0 {
			each(st)
		}
		st = st[:0]
	}
	prevBackslash := false
	for {
		c, err := in.ReadByte()
		if err != nil {
			end()
			return
		}
		backslash := prevBackslash
		prevBackslash = false
		switch {
		case c == '\n':
			line++
			if inString { // an unterminated string ends at the line
				inString = false
			}
			inComment = false
			if backslash {
				flushWord()
				continue
			}
			end()
		case inComment:
		case inString:
			if c == '"' {
				inString = false
				flushWord()
			} else if len(word) < 256 {
				word = append(word, c)
			}
		case c == '#':
			inComment = true
		case c == '"':
			flushWord()
			inString, inWord, quoted, wordLine = true, true, true, line
		case c == '{' || c == '}' || c == ';':
			end()
		case c == ' ' || c == '\t' || c == '\r':
			flushWord()
		case c == '\\':
			flushWord()
			prevBackslash = true
		default:
			if !inWord {
				inWord, wordLine = true, line
			}
			if len(word) < 256 {
				word = append(word, c)
			}
		}
	}
}
