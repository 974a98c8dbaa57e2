package plan

import (
	"fmt"
	"strings"

	"github.com/opsmigrate/migrate/config"
	"github.com/opsmigrate/migrate/state"
)

// Conntrack capacity. migrate's table on OLD turns connection tracking on
// for all of OLD's traffic; when the table is full, the kernel drops the
// first packet of every new flow, for every service on OLD. Before that,
// plan estimates what OLD will track and compares it with the limit.
const (
	// ConntrackWarnPercent: plan warns, and apply raises the limit or
	// refuses, when the estimate is above this share of nf_conntrack_max.
	// Half leaves room for bursts, and for conntrack's TIME_WAIT (120 s)
	// lasting twice the socket's (60 s): a busy server with closing
	// clients tracks up to twice the TIME_WAIT sockets it shows.
	ConntrackWarnPercent = 50
	// ConntrackTargetPercent: a raised limit puts the estimate at this
	// share of it.
	ConntrackTargetPercent = 25
	// conntrackRound: a raised limit is a multiple of this.
	conntrackRound = 65536
	// conntrackBucketLoad: above this many entries per hash bucket on
	// average, lookups slow down (no drops): plan notes it.
	conntrackBucketLoad = 8
)

// ConntrackCheck is plan's verdict on OLD's conntrack capacity.
type ConntrackCheck struct {
	Loaded   bool  `json:"loaded"`
	Count    int64 `json:"count"`
	Max      int64 `json:"max"` // 0: no limit, or unknown when !Loaded
	Buckets  int64 `json:"buckets,omitempty"`
	Sockets  int64 `json:"sockets"`  // TCP in use + TIME_WAIT + UDP in use
	Estimate int64 `json:"estimate"` // max(Count, Sockets)
	// Over: the estimate is above ConntrackWarnPercent of Max.
	Over bool `json:"over"`
	// Raise is the limit apply sets (0: none); Writable says whether OLD's
	// namespace may set it. Over && !Writable: apply refuses.
	Raise    int64 `json:"raise,omitempty"`
	Writable bool  `json:"writable"`
	// Refuse: apply refuses (over, not writable, and migrate's table,
	// which turns tracking on, is not on OLD yet). Once it is, apply never
	// refuses on this: that would block moving services back.
	Refuse bool `json:"refuse,omitempty"`
}

// CheckOldConntrack is CheckConntrack of OLD's facts, with Refuse set;
// nil when the config puts no table on OLD or OLD did not report.
func CheckOldConntrack(c *config.Config, oldFacts state.Facts) *ConntrackCheck {
	if !TracksOnOld(c) || oldFacts.Conntrack == nil {
		return nil
	}
	r := CheckConntrack(*oldFacts.Conntrack)
	r.Refuse = r.Over && !r.Writable && oldFacts.Nft == nil && oldFacts.NftDrift == ""
	return &r
}

// ConntrackEstimate is what OLD will track once migrate's table turns
// tracking on: what it tracks already, or, when more, one entry per
// socket it holds (TCP in any state, TIME_WAIT included, and UDP).
// Flows moved to NEW keep one entry on OLD instead of OLD's own socket.
func ConntrackEstimate(c state.Conntrack) (estimate, sockets int64) {
	sockets = c.TCPInUse + c.TCPTimeWait + c.UDPInUse
	return max(c.Count, sockets), sockets
}

// CheckConntrack compares the estimate with the limit. A limit of 0 is
// no limit; an unloaded conntrack has no limit to read yet (it is set when
// migrate's table loads the module): neither is over.
func CheckConntrack(c state.Conntrack) ConntrackCheck {
	r := ConntrackCheck{Loaded: c.Loaded, Count: c.Count, Max: c.Max, Buckets: c.Buckets, Writable: c.MaxWritable}
	r.Estimate, r.Sockets = ConntrackEstimate(c)
	if !c.Loaded || c.Max <= 0 {
		return r
	}
	r.Over = r.Estimate*100 > c.Max*ConntrackWarnPercent
	if r.Over {
		r.Raise = ConntrackRaise(r.Estimate, c.Max)
	}
	return r
}

// ConntrackRaise is the limit that puts estimate at ConntrackTargetPercent
// of it, rounded up to a multiple of 65536, never below cur.
func ConntrackRaise(estimate, cur int64) int64 {
	want := (estimate*100 + ConntrackTargetPercent - 1) / ConntrackTargetPercent
	want = (want + conntrackRound - 1) / conntrackRound * conntrackRound
	return max(want, cur)
}

// Percent is how full the table is now.
func (r ConntrackCheck) Percent() float64 {
	if r.Max <= 0 {
		return 0
	}
	return float64(r.Count) * 100 / float64(r.Max)
}

// Line is the plan's conntrack line: warning, note or fine.
func (r ConntrackCheck) Line() string {
	switch {
	case !r.Loaded:
		return fmt.Sprintf("conntrack on host old: not loaded yet (migrate's table loads it, with the kernel's default limit); OLD holds %d socket(s). Run plan again after the first apply to check the limit", r.Sockets)
	case r.Max <= 0:
		return fmt.Sprintf("conntrack on host old: %d entries, no limit (nf_conntrack_max = 0)", r.Count)
	case r.Over && r.Writable:
		return fmt.Sprintf("WARNING host old: conntrack would track about %d flow(s) (%d tracked now, %d sockets), over %d%% of its limit %d: when the table is full the kernel drops new flows of every service on OLD. apply raises %s to %d (recorded; rollback restores %d)",
			r.Estimate, r.Count, r.Sockets, ConntrackWarnPercent, r.Max, state.ConntrackMax, r.Raise, r.Max)
	case r.Over:
		what := "apply refuses until it is raised"
		if !r.Refuse {
			what = "raise it"
		}
		return fmt.Sprintf("WARNING host old: conntrack would track about %d flow(s) (%d tracked now, %d sockets), over %d%% of its limit %d: when the table is full the kernel drops new flows of every service on OLD. OLD's network namespace cannot change the limit (outside the host's initial namespace it is global and read-only), so %s. On the machine that runs OLD, as root in its initial namespace: %s",
			r.Estimate, r.Count, r.Sockets, ConntrackWarnPercent, r.Max, what, r.SysctlLine())
	}
	return ""
}

// SysctlLine is what to run to raise the limit by hand.
func (r ConntrackCheck) SysctlLine() string {
	return fmt.Sprintf("sysctl -w %s=%d (and put it in /etc/sysctl.d to keep it)", state.ConntrackMax, r.Raise)
}

// BucketNote notes a hash table that the (raised) limit overloads.
func (r ConntrackCheck) BucketNote() string {
	limit := r.Max
	if r.Raise > limit {
		limit = r.Raise
	}
	if r.Buckets <= 0 || r.Estimate <= r.Buckets*conntrackBucketLoad {
		return ""
	}
	return fmt.Sprintf("host old: conntrack's hash table has %d buckets for about %d flow(s) (limit %d): lookups slow down, nothing is dropped. To avoid it, set net.netfilter.nf_conntrack_buckets to %d or more in OLD's initial namespace (migrate does not change it)",
		r.Buckets, r.Estimate, limit, (r.Estimate+conntrackBucketLoad-1)/conntrackBucketLoad)
}

// TracksOnOld reports whether the config puts a table of migrate's on OLD,
// the one that turns tracking on there.
func TracksOnOld(c *config.Config) bool {
	if c.Tunnel != nil {
		return true
	}
	for _, f := range c.Forwards {
		if f.On == state.RoleOld {
			return true
		}
	}
	return false
}

// ConntrackError refuses the apply that would turn tracking on in a
// conntrack table OLD cannot enlarge itself and the estimate would fill
// past the share. nil when OLD did not report, or all is well.
func ConntrackError(c *config.Config, oldFacts state.Facts) error {
	r := CheckOldConntrack(c, oldFacts)
	if r == nil || !r.Refuse {
		return nil
	}
	return fmt.Errorf("refusing to turn on connection tracking on host old: it would track about %d flow(s) (%d tracked now, %d sockets), over %d%% of its limit %d, and OLD's network namespace cannot raise the limit. When the table is full the kernel drops new flows of every service on OLD. On the machine that runs OLD, as root in its initial namespace: %s",
		r.Estimate, r.Count, r.Sockets, ConntrackWarnPercent, r.Max, r.SysctlLine())
}

// conntrackDesired raises OLD's limit when the estimate is over the share
// and OLD may write it. Once raised (owned), the limit stays at least
// where migrate set it: a later plan never lowers it while migrate's
// table runs; rollback restores the value from before the first raise.
func conntrackDesired(c *config.Config, facts map[string]state.Facts, owned map[string]map[string]*state.Object, old *HostDesired) {
	f := facts[Old]
	if !TracksOnOld(c) || f.Conntrack == nil {
		return
	}
	cur, ok := f.Sysctls[state.ConntrackMax]
	if !ok {
		return
	}
	_, raised := owned[Old][state.Object{Sysctl: &state.Sysctl{Name: state.ConntrackMax}}.Key()]
	r := CheckConntrack(*f.Conntrack)
	switch {
	case r.Over && r.Writable:
		old.add(obj(state.Sysctl{Name: state.ConntrackMax, Value: fmt.Sprint(r.Raise)}))
	case raised:
		old.add(obj(state.Sysctl{Name: state.ConntrackMax, Value: cur}))
	}
}

// UDPWarmupNote says what the first apply does for UDP sessions where OLD
// tracks no flows yet (state.UDPWarmup): "" when it does not apply.
func UDPWarmupNote(c *config.Config, oldFacts state.Facts) string {
	ct := oldFacts.Conntrack
	if c.Tunnel == nil || oldFacts.Nft != nil || ct == nil || ct.Count != 0 {
		return ""
	}
	var udp []string
	for _, s := range c.Services {
		if s.Protocol == state.UDP && s.Stage != "old" {
			udp = append(udp, s.Name)
		}
	}
	if len(udp) == 0 {
		return ""
	}
	return fmt.Sprintf("host old tracks no flows yet: apply turns tracking on %s before it sends UDP service(s) %s to NEW, so a UDP client that keeps its socket (a game, QUIC, VoIP) and sends within that time stays with OLD until it goes quiet; one quiet for longer moves to NEW with its next datagram",
		state.UDPWarmup, strings.Join(udp, ", "))
}
