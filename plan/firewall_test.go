package plan_test

import (
	"strings"
	"testing"
	"time"

	"github.com/opsmigrate/migrate/plan"
	"github.com/opsmigrate/migrate/state"
)

// dockerChains are the chains Docker's iptables-nft rules make (table ip
// nat and ip filter), as the agent reports them.
var dockerChains = []state.BaseChain{
	{Family: "ip", Table: "filter", Chain: "DOCKER"},
	{Family: "ip", Table: "filter", Chain: "DOCKER-ISOLATION-STAGE-1"},
	{Family: "ip", Table: "filter", Chain: "DOCKER-USER"},
	{Family: "ip", Table: "filter", Chain: "FORWARD", Hook: "forward", Priority: 0, Policy: "drop", Type: "filter"},
	{Family: "ip", Table: "nat", Chain: "DOCKER"},
	{Family: "ip", Table: "nat", Chain: "PREROUTING", Hook: "prerouting", Priority: -100, Policy: "accept", Type: "nat"},
}

// Docker on both hosts: OLD's moved flows keep their destination, NEW
// routes the answers of flows its Docker DNATs back into the tunnel (the
// fwmark rule and the throw for OLD's endpoint), and plan gives the
// DOCKER-USER commands for OLD's FORWARD drop. Without Docker nothing of
// it appears.
func TestDockerDesired(t *testing.T) {
	c := mustParse(t, src)
	mk := func(docker bool) (*plan.Plan, map[string]state.Facts) {
		t.Helper()
		f := map[string]state.Facts{plan.Old: facts("198.51.100.10/24", 1500), plan.New: facts("203.0.113.20/24", 1500)}
		if docker {
			for _, h := range []string{plan.Old, plan.New} {
				hf := f[h]
				hf.Chains = dockerChains
				hf.Sysctls["net.ipv4.ip_forward"] = "1"
				f[h] = hf
			}
		}
		p, err := plan.Make(c, f, state.NewJournal(), time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		return p, f
	}
	p, f := mk(true)
	newSteps, oldSteps := lines(p.Hosts[0].Steps), lines(p.Hosts[1].Steps)
	for _, want := range []string{
		"+ rule v4 pref 900 fwmark 0x20000/0x20000 lookup 4242 proto 77\n",
		"+ route table 4242 throw 198.51.100.10/32\n",
		"answers of flows another table DNATs go back to the tunnel",
	} {
		if !strings.Contains(newSteps, want) {
			t.Errorf("new steps lack %q:\n%s", want, newSteps)
		}
	}
	if !strings.Contains(oldSteps, "moved flows keep their destination (another table DNATs)") {
		t.Errorf("old steps:\n%s", oldSteps)
	}
	w := strings.Join(plan.Warnings(c, f), "\n")
	for _, want := range []string{
		"WARNING host old: table ip filter, chain FORWARD (hook forward) has policy drop",
		"`iptables -I DOCKER-USER -i mig0 -j ACCEPT` and `iptables -I DOCKER-USER -o mig0 -j ACCEPT`",
	} {
		if !strings.Contains(w, want) {
			t.Errorf("warnings lack %q:\n%s", want, w)
		}
	}
	if strings.Contains(w, "host new") {
		t.Errorf("warning for NEW, whose Docker accepts what migrate brings:\n%s", w)
	}

	p, _ = mk(false)
	all := lines(p.Hosts[0].Steps) + lines(p.Hosts[1].Steps)
	for _, not := range []string{"DNAT", "throw 198.51.100.10"} {
		if strings.Contains(all, not) {
			t.Errorf("without Docker the plan has %q:\n%s", not, all)
		}
	}
	if s := lines(p.Hosts[0].Steps); strings.Contains(s, "fwmark") {
		t.Errorf("without Docker NEW gets a fwmark rule:\n%s", s)
	}
}
