package config

// A fast path for the HCL that plan files are written in (issue 18).
//
// hclsyntax lexes the whole file into one slice of 96-byte tokens before it
// parses (10 000 service blocks: about 400 000 tokens, 190 MB of slice
// growth and grapheme scanning per parse, 0.3 s of a 0.45 s Parse on an idle
// machine). Plan files use a small part of the language: blocks with quoted
// labels, arguments whose values are quoted strings, whole numbers, true,
// false, null, and lists of those, and line comments. fastParse reads that
// part in one pass, without tokens, and builds the very AST hclsyntax.ParseConfig
// builds for it (same node types, values and source ranges), so the decoder
// and every diagnostic it reports are unchanged.
//
// Anything else (an expression, a template sequence, an escape, a heredoc,
// a block comment, a one-line block, non-ASCII text, a carriage return) and
// every syntax error make fastParse give up, and the caller parses the file
// with hclsyntax as before: errors keep HCL's own wording and positions.
// TestFastParseMatchesHCL and FuzzFastParse hold the two paths to the same
// result.

import (
	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

// fastParse returns the body hclsyntax.ParseConfig would return for src, or
// ok == false when src is outside the subset it reads (or has an error).
func fastParse(src []byte, filename string) (body *hclsyntax.Body, ok bool) {
	f := &fastParser{src: src, filename: filename, pos: hcl.InitialPos}
	defer func() {
		if r := recover(); r != nil {
			if _, giveUp := r.(fastGiveUp); !giveUp {
				panic(r)
			}
			body, ok = nil, false
		}
	}()
	return f.file(), true
}

// fastGiveUp is the panic value that unwinds fastParse when the input leaves
// the subset; it never escapes fastParse.
type fastGiveUp struct{}

type fastParser struct {
	src      []byte
	filename string
	pos      hcl.Pos // of src[pos.Byte]
}

func (f *fastParser) giveUp() { panic(fastGiveUp{}) }

func (f *fastParser) peekByte() byte {
	if f.pos.Byte >= len(f.src) {
		return 0
	}
	return f.src[f.pos.Byte]
}

// advance returns the range of the n bytes at the current position (none of
// them a newline) and moves past them.
func (f *fastParser) advance(n int) hcl.Range {
	start := f.pos
	f.pos.Byte += n
	f.pos.Column += n
	return hcl.Range{Filename: f.filename, Start: start, End: f.pos}
}

// newline moves past the '\n' at the current position and returns its range.
func (f *fastParser) newline() hcl.Range {
	start := f.pos
	f.pos = hcl.Pos{Line: start.Line + 1, Column: 1, Byte: start.Byte + 1}
	return hcl.Range{Filename: f.filename, Start: start, End: f.pos}
}

// skipSpaces moves past spaces and tabs.
func (f *fastParser) skipSpaces() {
	for f.pos.Byte < len(f.src) {
		switch f.src[f.pos.Byte] {
		case ' ', '\t':
			f.pos.Byte++
			f.pos.Column++
		default:
			return
		}
	}
}

// atComment reports whether a line comment ("#" or "//") starts here; a
// block comment ("/*") gives up.
func (f *fastParser) atComment() bool {
	switch f.peekByte() {
	case '#':
		return true
	case '/':
		if f.pos.Byte+1 < len(f.src) {
			switch f.src[f.pos.Byte+1] {
			case '/':
				return true
			case '*':
				f.giveUp()
			}
		}
		f.giveUp()
	}
	return false
}

// comment moves past a line comment and its newline, if any. It returns the
// comment's range (the newline included, as HCL's comment token has it) and
// whether it ended with a newline.
func (f *fastParser) comment() (hcl.Range, bool) {
	start := f.pos
	for f.pos.Byte < len(f.src) {
		c := f.src[f.pos.Byte]
		if c == '\n' {
			f.newline()
			return hcl.Range{Filename: f.filename, Start: start, End: f.pos}, true
		}
		checkText(c, f)
		f.pos.Byte++
		f.pos.Column++
	}
	return hcl.Range{Filename: f.filename, Start: start, End: f.pos}, false
}

// checkText gives up on bytes whose columns or meaning this parser does not
// reproduce: non-ASCII (grapheme clusters), carriage returns and other
// control characters.
func checkText(c byte, f *fastParser) {
	if c >= 0x80 || c == '\r' || (c < 0x20 && c != '\t') || c == 0x7f {
		f.giveUp()
	}
}

// lineEnd moves past what the parser sees after an item: a newline (a real
// one, or a comment ending with one, whose range it takes) or the end of the
// file. It gives up at anything else. Spaces before it are skipped.
func (f *fastParser) lineEnd() (rng hcl.Range, eof bool) {
	f.skipSpaces()
	for {
		switch {
		case f.pos.Byte >= len(f.src):
			return f.eofRange(), true
		case f.src[f.pos.Byte] == '\n':
			return f.newline(), false
		case f.atComment():
			r, nl := f.comment()
			if nl {
				return r, false
			}
			// A comment without a newline at the end of the file: the
			// parser skips it and sees the end of the file.
		default:
			f.giveUp()
		}
	}
}

func (f *fastParser) eofRange() hcl.Range {
	return hcl.Range{Filename: f.filename, Start: f.pos, End: f.pos}
}

// skipInBrackets skips what the parser skips inside brackets (spaces,
// newlines, comments) and returns the next byte (0 at the end).
func (f *fastParser) skipInBrackets() byte {
	for {
		f.skipSpaces()
		switch {
		case f.pos.Byte >= len(f.src):
			return 0
		case f.src[f.pos.Byte] == '\n':
			f.newline()
		case f.atComment():
			f.comment()
		default:
			return f.src[f.pos.Byte]
		}
	}
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_'
}

func isIdentByte(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '-'
}

// ident reads an identifier at the current position.
func (f *fastParser) ident() (string, hcl.Range) {
	i := f.pos.Byte
	if i >= len(f.src) || !isIdentStart(f.src[i]) {
		f.giveUp()
	}
	j := i + 1
	for j < len(f.src) && isIdentByte(f.src[j]) {
		j++
	}
	return string(f.src[i:j]), f.advance(j - i)
}

// quoted reads a quoted string of plain text: no escapes, no template
// sequences. It returns the text, the range of the whole string with its
// quotes, and the range of the text (the literal token's).
func (f *fastParser) quoted() (string, hcl.Range, hcl.Range) {
	open := f.advance(1) // '"'
	i := f.pos.Byte
	j := i
	for ; j < len(f.src) && f.src[j] != '"'; j++ {
		c := f.src[j]
		checkText(c, f)
		if c == '\\' || c == '$' || c == '%' || c == '\t' {
			f.giveUp()
		}
	}
	if j >= len(f.src) {
		f.giveUp() // unterminated
	}
	text := f.advance(j - i)
	close := f.advance(1)
	return string(f.src[i:j]), hcl.RangeBetween(open, close), text
}

func (f *fastParser) file() *hclsyntax.Body {
	// The top-level body starts at the first token the parser sees: a
	// newline (or a comment ending with one), an identifier, or the end.
	var startRange hcl.Range
	f.skipSpaces()
	switch {
	case f.pos.Byte >= len(f.src):
		startRange = f.eofRange()
	case f.src[f.pos.Byte] == '\n':
		startRange = hcl.Range{Filename: f.filename, Start: f.pos, End: hcl.Pos{Line: f.pos.Line + 1, Column: 1, Byte: f.pos.Byte + 1}}
	case f.atComment():
		save := f.pos
		r, nl := f.comment()
		f.pos = save
		if !nl {
			f.giveUp() // a file of one comment: rare, leave it to hclsyntax
		}
		startRange = r
	default:
		save := f.pos
		_, startRange = f.ident()
		f.pos = save
	}
	attrs, blocks, endRange := f.bodyItems(true)
	return &hclsyntax.Body{
		Attributes: attrs,
		Blocks:     blocks,
		SrcRange:   hcl.RangeBetween(startRange, endRange),
		EndRange:   hcl.Range{Filename: endRange.Filename, Start: endRange.End, End: endRange.End},
	}
}

// bodyItems reads arguments and blocks up to the end of the file (top) or a
// closing brace, which it consumes; endRange is the range of that end.
func (f *fastParser) bodyItems(top bool) (hclsyntax.Attributes, hclsyntax.Blocks, hcl.Range) {
	attrs := hclsyntax.Attributes{}
	blocks := hclsyntax.Blocks{}
	for {
		f.skipSpaces()
		switch c := f.peekByte(); {
		case f.pos.Byte >= len(f.src):
			if !top {
				f.giveUp() // unclosed block
			}
			return attrs, blocks, f.eofRange()
		case c == '\n':
			f.newline()
		case c == '}':
			if top {
				f.giveUp()
			}
			return attrs, blocks, f.advance(1)
		case f.atComment():
			f.comment()
		case isIdentStart(c):
			name, nameRange := f.ident()
			f.skipSpaces()
			if f.peekByte() == '=' {
				a := f.attribute(name, nameRange)
				if _, dup := attrs[name]; dup {
					f.giveUp()
				}
				attrs[name] = a
			} else {
				blocks = append(blocks, f.block(name, nameRange))
			}
		default:
			f.giveUp()
		}
	}
}

func (f *fastParser) attribute(name string, nameRange hcl.Range) *hclsyntax.Attribute {
	eq := f.advance(1)
	if c := f.peekByte(); c == '=' || c == '>' {
		f.giveUp() // "==", "=>"
	}
	f.skipSpaces()
	expr := f.expr(false)
	f.lineEnd()
	return &hclsyntax.Attribute{
		Name:        name,
		Expr:        expr,
		SrcRange:    hcl.RangeBetween(nameRange, expr.Range()),
		NameRange:   nameRange,
		EqualsRange: eq,
	}
}

func (f *fastParser) block(typ string, typeRange hcl.Range) *hclsyntax.Block {
	var labels []string
	var labelRanges []hcl.Range
	for {
		f.skipSpaces()
		c := f.peekByte()
		if c == '{' {
			break
		}
		switch {
		case c == '"':
			s, r, _ := f.quoted()
			labels = append(labels, s)
			labelRanges = append(labelRanges, r)
		case isIdentStart(c):
			s, r := f.ident()
			labels = append(labels, s)
			labelRanges = append(labelRanges, r)
		default:
			f.giveUp()
		}
	}
	open := f.advance(1)
	// Only the multi-line form: after "{" comes the end of the line or "}".
	f.skipSpaces()
	switch c := f.peekByte(); {
	case c == '\n', c == '}':
	case f.pos.Byte < len(f.src) && f.atComment():
	default:
		f.giveUp()
	}
	attrs, blocks, close := f.bodyItems(false)
	f.lineEnd()
	return &hclsyntax.Block{
		Type:   typ,
		Labels: labels,
		Body: &hclsyntax.Body{
			Attributes: attrs,
			Blocks:     blocks,
			SrcRange:   hcl.RangeBetween(open, close),
			EndRange:   hcl.Range{Filename: close.Filename, Start: close.End, End: close.End},
		},
		TypeRange:       typeRange,
		LabelRanges:     labelRanges,
		OpenBraceRange:  open,
		CloseBraceRange: close,
	}
}

// expr reads a value: a quoted string, a whole number, true, false, null,
// or a list of values. What may follow it is checked by the caller.
func (f *fastParser) expr(inBrackets bool) hclsyntax.Expression {
	var e hclsyntax.Expression
	switch c := f.peekByte(); {
	case c == '"':
		s, whole, text := f.quoted()
		// HCL's lexer emits a literal token even for "": an empty one,
		// placed just after the closing quote.
		if s == "" {
			text = hcl.Range{Filename: whole.Filename, Start: whole.End, End: whole.End}
		}
		e = &hclsyntax.TemplateExpr{
			Parts:    []hclsyntax.Expression{&hclsyntax.LiteralValueExpr{Val: cty.StringVal(s), SrcRange: text}},
			SrcRange: whole,
		}
	case c >= '0' && c <= '9':
		i := f.pos.Byte
		j := i
		for j < len(f.src) && f.src[j] >= '0' && f.src[j] <= '9' {
			j++
		}
		if j < len(f.src) && (isIdentByte(f.src[j]) || f.src[j] == '.') {
			f.giveUp() // a fraction, an exponent, or something glued on
		}
		v, err := cty.ParseNumberVal(string(f.src[i:j]))
		if err != nil {
			f.giveUp()
		}
		e = &hclsyntax.LiteralValueExpr{Val: v, SrcRange: f.advance(j - i)}
	case isIdentStart(c):
		name, r := f.ident()
		var v cty.Value
		switch name {
		case "true":
			v = cty.True
		case "false":
			v = cty.False
		case "null":
			v = cty.NullVal(cty.DynamicPseudoType)
		default:
			f.giveUp() // a variable or a function call
		}
		e = &hclsyntax.LiteralValueExpr{Val: v, SrcRange: r}
	case c == '[':
		e = f.list()
	default:
		f.giveUp()
	}
	// What follows a value: the end of the line, or inside brackets a comma
	// or the closing bracket. Anything else (an operator, an index, a
	// traversal) is an expression this parser does not read.
	save := f.pos
	var c byte
	if inBrackets {
		c = f.skipInBrackets()
	} else {
		f.skipSpaces()
		c = f.peekByte()
	}
	switch {
	case inBrackets && (c == ',' || c == ']'):
	case !inBrackets && (c == '\n' || c == 0 || c == '#' || c == '/'):
	default:
		f.giveUp()
	}
	f.pos = save
	return e
}

func (f *fastParser) list() hclsyntax.Expression {
	open := f.advance(1) // '['
	var exprs []hclsyntax.Expression
	for {
		c := f.skipInBrackets()
		if c == ']' {
			break
		}
		if c == 0 {
			f.giveUp()
		}
		exprs = append(exprs, f.expr(true))
		c = f.skipInBrackets()
		if c == ']' {
			break
		}
		if c != ',' {
			f.giveUp()
		}
		f.advance(1)
	}
	close := f.advance(1)
	return &hclsyntax.TupleConsExpr{Exprs: exprs, SrcRange: hcl.RangeBetween(open, close), OpenRange: open}
}
