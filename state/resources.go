package state

import (
	"sort"
	"strings"
)

// Resource is one object migrate owns on a host, as the journal records
// it: what it is now and what rollback restores. It is what `migrate state
// list` and `migrate state show` print.
type Resource struct {
	// Address names the resource on the command line: host, kind and the
	// rest of the object's key, joined by dots, spaces as underscores
	// ("old.link.mig0", "new.addr.lo_198.51.100.10/32").
	Address string `json:"address"`
	Host    string `json:"host"`
	Key     string `json:"key"`
	// Current is the value migrate last gave the object; nil when
	// migrate removed it (the kernel's pref-0 local rule, say).
	Current *Object `json:"current"`
	// Restore is what rollback puts back; nil when migrate created the
	// object (rollback deletes it).
	Restore *Object `json:"restore"`
	// Entries are the active journal entries that touched it, oldest
	// first.
	Entries []Entry `json:"entries"`
}

// ResourceAddress is the command-line address of the object with key on
// host.
func ResourceAddress(host, key string) string {
	kind, rest, _ := strings.Cut(key, " ")
	return host + "." + kind + "." + strings.Join(strings.Fields(rest), "_")
}

// normalizeAddress makes addresses comparable whether the user typed
// spaces (a quoted key) or underscores.
func normalizeAddress(a string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(a, "_", " ")), "_")
}

// Resources lists what the journal's active entries own, by host then in
// the order migrate first touched each object.
func (j *Journal) Resources() []Resource {
	index := map[string]int{}
	var out []Resource
	for _, e := range j.Active() {
		host, key := e.Step.Host, e.Step.Key()
		id := host + "\x00" + key
		i, ok := index[id]
		if !ok {
			i = len(out)
			index[id] = i
			out = append(out, Resource{Address: ResourceAddress(host, key), Host: host, Key: key, Restore: e.Step.Before})
		}
		out[i].Current = e.Step.After
		out[i].Entries = append(out[i].Entries, *e)
	}
	sort.SliceStable(out, func(a, b int) bool { return hostOrder(out[a].Host) < hostOrder(out[b].Host) })
	return out
}

// FindResource returns the resource at address (spaces or underscores
// alike), or false.
func (j *Journal) FindResource(address string) (Resource, bool) {
	want := normalizeAddress(address)
	for _, r := range j.Resources() {
		if normalizeAddress(r.Address) == want {
			return r, true
		}
	}
	return Resource{}, false
}

// hostOrder puts NEW first: apply changes it first.
func hostOrder(h string) int {
	switch h {
	case "new":
		return 0
	case "old":
		return 1
	}
	return 2
}
