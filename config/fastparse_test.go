package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// fastParseCases are inputs written to reach the corners of fastParse:
// comments everywhere a line may hold one, empty strings and lists,
// trailing commas, lists over several lines, tabs, identifier labels, empty
// blocks, files that start or end oddly. Some are outside its subset or
// wrong; for those it must give up.
var fastParseCases = map[string]string{
	"empty":              ``,
	"newline only":       "\n",
	"spaces only":        "   ",
	"comment only":       "# just a comment",
	"comment line":       "# a comment\n",
	"slash comment":      "// a comment\nhost \"old\" {\n}\n",
	"leading spaces":     "   host \"old\" {\n  ssh = \"root@192.0.2.1\"\n}\n",
	"no final newline":   "host \"old\" {\n  ssh = \"root@192.0.2.1\"\n}",
	"empty block":        "tunnel {}\n",
	"empty block spaced": "tunnel {   }\n\n\n",
	"ident label":        "host old {\n}\n",
	"two labels":         "service \"a\" \"b\" {\n}\n",
	"empty label":        "service \"\" {\n}\n",
	"nested block":       "service \"a\" {\n  inner {\n    x = 1\n  }\n}\n",
	"comments around": `# head
host "old" { # after the brace
  # inside
  ssh = "root@192.0.2.1" # after a value
  sudo = true// slashes
} # after the block
# tail`,
	"lists": `service "s" {
  ports = []
  a = [1]
  b = [1, 2, 3,]
  c = [
    1, # one
    "2-3", // two
    # nothing
  ]
  d = [ "x" , "y" ]
  e = [[1], [], ["a"]]
}
`,
	"values":                     "x {\n  s = \"\"\n  t = \"with spaces and = { } [ ] # // inside\"\n  n = 0\n  m = 007\n  big = 123456789012345678901234567890\n  b = false\n  z = null\n}\n",
	"tabs":                       "x {\n\tkey\t=\t\"v\"\t# tab\n\tp = [\t1,\t2 ]\n}\n",
	"top-level attribute":        "a = 1\nb = \"x\"\n",
	"blank lines":                "\n\n\nhost \"old\" {\n\n\n  ssh = \"x\"\n\n}\n\n\n",
	"comment at eof after value": "x {\n}\na = 1 # end",
	// Outside the subset, or errors: fastParse gives up, hclsyntax decides.
	"block comment":      "/* c */\nhost \"old\" {\n}\n",
	"expression":         "x {\n  a = 1 + 2\n}\n",
	"negative":           "x {\n  a = -1\n}\n",
	"fraction":           "x {\n  a = 1.5\n}\n",
	"exponent":           "x {\n  a = 1e3\n}\n",
	"variable":           "x {\n  a = foo\n}\n",
	"call":               "x {\n  a = max(1, 2)\n}\n",
	"traversal":          "x {\n  a = true.x\n}\n",
	"index":              "x {\n  a = [1][0]\n}\n",
	"template":           "x {\n  a = \"${b}\"\n}\n",
	"escaped template":   "x {\n  a = \"$${b}\"\n}\n",
	"percent":            "x {\n  a = \"100%\"\n}\n",
	"escape":             "x {\n  a = \"a\\\"b\"\n}\n",
	"heredoc":            "x {\n  a = <<EOT\nhello\nEOT\n}\n",
	"object":             "x {\n  a = { b = 1 }\n}\n",
	"for":                "x {\n  a = [for v in [1] : v]\n}\n",
	"one-line block":     "x { a = 1 }\n",
	"unicode":            "x {\n  a = \"é\"\n}\n",
	"unicode comment":    "# é\nx {\n}\n",
	"crlf":               "x {\r\n  a = 1\r\n}\r\n",
	"duplicate argument": "x {\n  a = 1\n  a = 2\n}\n",
	"unclosed block":     "x {\n  a = 1\n",
	"unterminated":       "x {\n  a = \"abc\n}\n",
	"stray brace":        "}\n",
	"missing newline":    "x {\n  a = 1 b = 2\n}\n",
	"comma after arg":    "x {\n  a = 1,\n}\n",
	"block then text":    "x {\n} y\n",
	"equals in header":   "x = {\n}\n",
	"quoted name":        "\"x\" = 1\n",
	"double equals":      "x {\n  a == 1\n}\n",
	"unclosed list":      "x {\n  a = [1, 2\n}\n",
	"missing comma":      "x {\n  a = [1 2]\n}\n",
	"glued number":       "x {\n  a = 12ab\n}\n",
	"nul":                "x {\n  a = \"\x00\"\n}\n",
	"header newline":     "x\n{\n}\n",
}

// fastParseInputs gathers every plan-like text the repository has: the
// cases above, the examples, the fuzz corpus of FuzzParse, generated bench
// plans of both shapes, and the inline plans of this package's tests.
func fastParseInputs(t testing.TB) map[string][]byte {
	in := map[string][]byte{}
	for name, src := range fastParseCases {
		in["case/"+name] = []byte(src)
	}
	for _, glob := range []string{"../examples/*.hcl", "../examples/*/*.hcl", "../examples/*/*/*.hcl", "../docs/*.hcl", "../lab/*.hcl"} {
		files, _ := filepath.Glob(glob)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			in[f] = b
		}
	}
	corpus, _ := filepath.Glob("testdata/fuzz/FuzzParse/*")
	for _, f := range corpus {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ln := range strings.Split(string(b), "\n") {
			if s, ok := strings.CutPrefix(ln, "string("); ok {
				u, err := strconv.Unquote(strings.TrimSuffix(s, ")"))
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				in[f] = []byte(u)
			}
		}
	}
	in["bench/one-port blocks"] = fastBenchPlan(300, false)
	in["bench/lists and ranges"] = fastBenchPlan(300, true)
	in["inline/fullExample"] = []byte(fullExample)
	in["inline/forwardsOnly"] = []byte(forwardsOnly)
	in["inline/svc"] = []byte(svc(sAddr, sProto, `  ports    = ["20-30", 25, 70000, "9-1"]`, `  stage    = "canary"`))
	in["inline/tun"] = []byte(tun(`  type = "gre"`, `  key = "0x10"`, `  old_inner = "fe80::1/64"`))
	return in
}

// fastBenchPlan is a plan like bench/labbench's: n one-port blocks, or
// blocks of ranges and lists.
func fastBenchPlan(n int, ranges bool) []byte {
	var b bytes.Buffer
	b.WriteString("host \"old\" {\n  ssh = \"root@198.51.100.10\"\n}\nhost \"new\" {\n  ssh = \"root@203.0.113.20\"\n}\ntunnel {\n  type         = \"vxlan\"\n  old_endpoint = \"198.51.100.10\"\n  new_endpoint = \"203.0.113.20\"\n}\n")
	for i := 0; i < n; i++ {
		ports := strconv.Itoa(20000 + i)
		if ranges {
			ports = fmt.Sprintf("\"%d-%d\", %d, %d", 20000+i*10, 20004+i*10, 20005+i*10, 20006+i*10)
		}
		fmt.Fprintf(&b, "\nservice \"s%05d\" {\n  address       = \"198.51.100.%d\"\n  protocol      = \"tcp\"\n  ports         = [%s]\n  stage         = \"new\"\n  allow_unready = true\n}\n", i, 100+i%10, ports)
	}
	return b.Bytes()
}

// checkFastParse fails when fastParse accepts src but hclsyntax reports an
// error for it or builds another AST, or when Parse's result (config or
// every error line) differs between the two paths.
func checkFastParse(t *testing.T, name string, src []byte) (fast bool) {
	t.Helper()
	body, ok := fastParse(src, "f.hcl")
	file, diags := hclsyntax.ParseConfig(src, "f.hcl", hcl.InitialPos)
	if ok {
		if diags.HasErrors() {
			t.Fatalf("%s: fastParse accepted what hclsyntax rejects: %v", name, diags)
		}
		want := file.Body.(*hclsyntax.Body)
		if !reflect.DeepEqual(body, want) {
			t.Fatalf("%s: fastParse AST differs from hclsyntax's\n fast: %s\n  hcl: %s", name, dumpAST(body), dumpAST(want))
		}
	}
	cfgFast, errFast := parse(src, "f.hcl", true)
	cfgHCL, errHCL := parse(src, "f.hcl", false)
	if fmt.Sprint(errFast) != fmt.Sprint(errHCL) {
		t.Fatalf("%s: errors differ\n fast: %v\n  hcl: %v", name, errFast, errHCL)
	}
	if !reflect.DeepEqual(cfgFast, cfgHCL) {
		t.Fatalf("%s: configs differ\n fast: %s\n  hcl: %s", name, dump(cfgFast), dump(cfgHCL))
	}
	return ok
}

// TestFastParseMatchesHCL: on every input, fastParse either gives up or
// builds exactly hclsyntax's AST, and Parse returns the same config and the
// same file:line:col errors either way. The examples and the benchmark plans
// must take the fast path (or it would be dead code).
func TestFastParseMatchesHCL(t *testing.T) {
	in := fastParseInputs(t)
	names := make([]string, 0, len(in))
	for n := range in {
		names = append(names, n)
	}
	sort.Strings(names)
	var fast, slow []string
	for _, n := range names {
		if checkFastParse(t, n, in[n]) {
			fast = append(fast, n)
		} else {
			slow = append(slow, n)
		}
	}
	t.Logf("fast path: %d inputs; hclsyntax: %v", len(fast), slow)
	mustBeFast := []string{"bench/one-port blocks", "bench/lists and ranges", "inline/fullExample", "case/comments around", "case/lists", "case/values", "case/tabs", "case/empty", "case/ident label"}
	for _, f := range names {
		if strings.HasPrefix(f, "../examples/") {
			mustBeFast = append(mustBeFast, f)
		}
	}
	for _, n := range mustBeFast {
		if _, ok := in[n]; !ok {
			t.Errorf("input %q is missing", n)
			continue
		}
		if _, ok := fastParse(in[n], "f.hcl"); !ok {
			t.Errorf("%s: fastParse gave up on a plain plan file", n)
		}
	}
	for n, src := range fastParseCases {
		if _, ok := fastParse([]byte(src), "f.hcl"); ok && strings.Contains(n, "unclosed") {
			t.Errorf("case %q: fastParse accepted an error", n)
		}
	}
}

// FuzzFastParse holds fastParse to hclsyntax on any input.
func FuzzFastParse(f *testing.F) {
	for _, src := range fastParseInputs(f) {
		f.Add(string(src))
	}
	f.Fuzz(func(t *testing.T, src string) {
		checkFastParse(t, "input", []byte(src))
	})
}

// dumpAST renders an AST for failure messages: node types, values, ranges.
func dumpAST(n any) string {
	var b strings.Builder
	var walk func(v reflect.Value, depth int)
	walk = func(v reflect.Value, depth int) {
		if depth > 40 {
			b.WriteString("…")
			return
		}
		switch v.Kind() {
		case reflect.Pointer, reflect.Interface:
			if v.IsNil() {
				b.WriteString("nil")
				return
			}
			if v.Kind() == reflect.Pointer {
				b.WriteString("&")
			}
			walk(v.Elem(), depth+1)
		case reflect.Struct:
			if r, ok := v.Interface().(hcl.Range); ok {
				fmt.Fprintf(&b, "%d:%d(%d)-%d:%d(%d)", r.Start.Line, r.Start.Column, r.Start.Byte, r.End.Line, r.End.Column, r.End.Byte)
				return
			}
			if s, ok := v.Interface().(fmt.GoStringer); ok && v.Type().PkgPath() != "github.com/hashicorp/hcl/v2/hclsyntax" {
				b.WriteString(s.GoString())
				return
			}
			b.WriteString(v.Type().Name() + "{")
			for i := 0; i < v.NumField(); i++ {
				if !v.Type().Field(i).IsExported() {
					continue
				}
				fmt.Fprintf(&b, "%s: ", v.Type().Field(i).Name)
				walk(v.Field(i), depth+1)
				b.WriteString(", ")
			}
			b.WriteString("}")
		case reflect.Slice:
			if v.IsNil() {
				b.WriteString("nil")
				return
			}
			b.WriteString("[")
			for i := 0; i < v.Len(); i++ {
				walk(v.Index(i), depth+1)
				b.WriteString(" ")
			}
			b.WriteString("]")
		case reflect.Map:
			keys := v.MapKeys()
			sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
			b.WriteString("map[")
			for _, k := range keys {
				fmt.Fprintf(&b, "%s: ", k)
				walk(v.MapIndex(k), depth+1)
				b.WriteString(" ")
			}
			b.WriteString("]")
		default:
			fmt.Fprintf(&b, "%v", v.Interface())
		}
	}
	walk(reflect.ValueOf(n), 0)
	return b.String()
}

// BenchmarkParsePaths compares Parse with and without fastParse on the
// benchmark plans of both shapes (the baseline, hclsyntax, in the same run).
func BenchmarkParsePaths(b *testing.B) {
	for _, shape := range []struct {
		name   string
		ranges bool
		n      int
	}{{"one-port blocks", false, 10000}, {"lists and ranges", true, 1000}} {
		src := fastBenchPlan(shape.n, shape.ranges)
		for _, fast := range []bool{false, true} {
			path := map[bool]string{false: "hclsyntax", true: "fast"}[fast]
			b.Run(fmt.Sprintf("%s/blocks=%d/%s", shape.name, shape.n, path), func(b *testing.B) {
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := parse(src, "bench.hcl", fast); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
