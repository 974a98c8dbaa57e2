package main

// -profile DIR: while the 4-stream throughput and the connection-rate
// measurements of each data-path column run, labbench records a
// system-wide perf profile (`perf record -a -g`) into DIR and counts what
// the kernel did in OLD's and NEW's namespaces: conntrack entries created
// (conntrack -C before and after; closed TCP flows stay in TIME_WAIT for
// 120 s and UDP ones 30 s or more, so the difference over a few seconds
// is what was created) and the packets of every nft rule counter of OLD's
// and NEW's tables. profileSummary then prints, per column and
// measurement, kernel samples per operation by function group, which is
// what the per-packet and per-flow costs in BENCHMARKS.md come from.
//
// perf sees the whole machine (other sessions too): only kernel symbols
// of the network path are grouped; the rest is reported as "other".

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opsmigrate/migrate/lab"
)

var flagProfile = flag.String("profile", "", "record perf profiles and conntrack counts of the throughput and connection-rate measurements into this directory")

type profRun struct {
	col, key string
	ops      float64 // operations in the measurement (bytes/1448 for throughput, connections for the rate)
	data     string  // perf data file
	ctDelta  map[string]int
	perf     *exec.Cmd
	ct0      map[string]int
}

var profRuns []*profRun

func safeName(s string) string {
	return regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(s, "_")
}

func (b *bench) conntrackCounts(ctx context.Context) map[string]int {
	m := map[string]int{}
	for _, role := range []string{lab.RoleOld, lab.RoleNew} {
		out, err := b.output(ctx, 20*time.Second, role, "conntrack", "-C")
		if err == nil {
			m[role], _ = strconv.Atoi(strings.TrimSpace(string(out)))
		}
	}
	return m
}

// profStart starts perf for one measurement; nil when -profile is unset.
func (b *bench) profStart(ctx context.Context, col, key string) *profRun {
	if *flagProfile == "" {
		return nil
	}
	_ = os.MkdirAll(*flagProfile, 0o755)
	p := &profRun{col: col, key: key, data: filepath.Join(*flagProfile, safeName(col)+"-"+key+".data")}
	p.ct0 = b.conntrackCounts(ctx)
	p.perf = exec.Command("perf", "record", "-a", "-g", "-F", "999", "-o", p.data)
	if err := p.perf.Start(); err != nil {
		progress("  perf: %v", err)
		p.perf = nil
	}
	time.Sleep(300 * time.Millisecond)
	return p
}

func (b *bench) profStop(ctx context.Context, p *profRun, ops float64) {
	if p == nil {
		return
	}
	if p.perf != nil {
		_ = p.perf.Process.Signal(os.Interrupt)
		_ = p.perf.Wait()
	}
	ct1 := b.conntrackCounts(ctx)
	p.ctDelta = map[string]int{}
	for k, v := range ct1 {
		p.ctDelta[k] = v - p.ct0[k]
	}
	p.ops = ops
	profRuns = append(profRuns, p)
}

// Function groups of the network path, matched in order against the
// sampled kernel symbol (self time).
var profGroups = []struct{ name, re string }{
	{"vxlan/udp tunnel", `vxlan|udp_tunnel|iptunnel|skb_udp_tunnel|__skb_udp_tunnel|gro_cells|udp_gro|udp4_gro|udp_gro_receive|udp4_gro|__udp4_lib_rcv|udp_queue_rcv|udp_rcv|udp4_lib_lookup|__udp4_lib_lookup|udp_lib_lookup|udp_unicast_rcv|udp_send_skb|skb_udp`},
	{"conntrack", `nf_conntrack|nf_ct_|__nf_ct|nf_nat|hash_conntrack|____nf_conntrack|nf_confirm|__nf_conntrack|tcp_packet|nf_ct_seq|tcp_in_window|nf_conntrack_tcp|nf_conntrack_udp|init_conntrack|tcp_error|nf_ip_checksum`},
	{"nftables", `nft_|nf_tables|__nft|nft_do_chain|nf_hook_slow|nf_hook`},
	{"routing/fib/policy", `fib_|ip_route|ip_rt|rt_dst|dst_|ipv4_dst|fib4|ip_mkroute|rt_set_nexthop|fib_rules|__fib_lookup|l3mdev|ip_route_input`},
	{"checksum/copy", `csum|checksum|copy_user|memcpy|memmove|copy_to|copy_from|_copy_|skb_copy`},
	{"GSO/GRO/segmentation", `gso|gro|segment|skb_segment|tcp4_gso|inet_gso|__skb_gso|napi_gro|dev_gro`},
	{"tcp/ip stack", `tcp_|ip_|ipv4_|inet_|__tcp|__ip|sk_|sock_|__sk|skb_|__skb|kfree_skb|__alloc_skb|netif_|__netif|net_rx|process_backlog|veth|__dev_queue|dev_hard|dev_queue|neigh|eth_|sch_|qdisc|__napi|napi_|ip6_|rps`},
}

func profGroup(sym string) string {
	for _, g := range profGroups {
		if regexp.MustCompile(g.re).MatchString(sym) {
			return g.name
		}
	}
	return ""
}

// perfGroups reads a perf data file: kernel samples (self) per group.
func perfGroups(data string) (map[string]float64, float64, error) {
	out, err := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", "sym", "-F", "sample,sym").Output()
	if err != nil {
		return nil, 0, err
	}
	groups := map[string]float64{}
	var all float64
	for _, ln := range strings.Split(string(out), "\n") {
		f := strings.Fields(ln)
		if len(f) < 3 || strings.HasPrefix(ln, "#") {
			continue
		}
		n, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		all += n
		if f[1] != "[k]" {
			continue
		}
		if g := profGroup(f[2]); g != "" {
			groups[g] += n
		} else {
			groups["other kernel"] += n
		}
	}
	return groups, all, nil
}

// profileSummary: for each measurement, samples per 1000 operations by
// group (at 999 Hz a sample is about 1 ms of one CPU), and conntrack
// entries created per operation on OLD and NEW.
func profileSummary() string {
	if len(profRuns) == 0 {
		return ""
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n### Profile (-profile %s)\n\n", *flagProfile)
	out.WriteString("perf record -a -g -F 999 during each measurement (whole machine). Cells: kernel CPU time per operation\n")
	out.WriteString("by function group (self time, µs: samples × 1/999 s ÷ operations; an operation is 1448 B of TCP payload\n")
	out.WriteString("for throughput, one connection for the connection rate), then conntrack entries created per operation.\n\n")
	names := []string{}
	for _, g := range profGroups {
		names = append(names, g.name)
	}
	names = append(names, "other kernel")
	header := []string{"measurement", "ops"}
	header = append(header, names...)
	header = append(header, "conntrack entries/op OLD", "NEW")
	var rows [][]string
	sort.SliceStable(profRuns, func(i, j int) bool { return profRuns[i].key < profRuns[j].key })
	for _, p := range profRuns {
		g, _, err := perfGroups(p.data)
		row := []string{p.col + ", " + p.key, fmt.Sprintf("%.0f", p.ops)}
		for _, n := range names {
			if err != nil || p.ops == 0 {
				row = append(row, "–")
				continue
			}
			row = append(row, fmt.Sprintf("%.2f", g[n]/999/p.ops*1e6))
		}
		for _, r := range []string{lab.RoleOld, lab.RoleNew} {
			if p.ops == 0 {
				row = append(row, "–")
				continue
			}
			row = append(row, fmt.Sprintf("%.2f", float64(p.ctDelta[r])/p.ops))
		}
		rows = append(rows, row)
	}
	out.WriteString(mdTable(header, rows))
	return out.String()
}
