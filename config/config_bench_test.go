package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/opsmigrate/migrate/config"
)

// benchSizes are the service counts of issue 8's scale benchmarks.
var benchSizes = []int{1, 100, 1000, 10000}

// benchPlan renders a plan file with n one-port services spread over ten
// addresses, the shape bench/labbench applies to the lab.
func benchPlan(n int) []byte {
	var b strings.Builder
	b.WriteString(`host "old" {
  ssh         = "root@198.51.100.10:22"
  known_hosts = "/dev/null"
}

host "new" {
  ssh         = "root@203.0.113.20:22"
  known_hosts = "/dev/null"
}

tunnel {
  type         = "vxlan"
  old_endpoint = "198.51.100.10"
  new_endpoint = "203.0.113.20"
}
`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "\nservice \"s%05d\" {\n  address       = \"198.51.100.%d\"\n  protocol      = \"tcp\"\n  ports         = [%d]\n  stage         = \"new\"\n  allow_unready = true\n}\n",
			i, 100+i%10, 20000+i/10)
	}
	return []byte(b.String())
}

// BenchmarkParse measures loading a plan file: HCL parsing, decoding and
// validation (overlap checks included).
func BenchmarkParse(b *testing.B) {
	for _, n := range benchSizes {
		src := benchPlan(n)
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				c, err := config.Parse(src, "bench.hcl")
				if err != nil {
					b.Fatal(err)
				}
				if len(c.Services) != n {
					b.Fatalf("%d services, want %d", len(c.Services), n)
				}
			}
		})
	}
}
