// Package state holds migrate's plain values: the kernel objects migrate
// manages (links, sysctls, rules, addresses, routes, its nft table), the
// facts an agent reports about a host, the steps that change one object, and
// the journal (state file) that records every applied step with the value it
// replaced.
//
// Nothing here does I/O on a host. Every type is a value that can be printed,
// compared and serialised to JSON; the only file access is Journal.Save/Load.
//
// The values are typed: roles, protocols and tunnel types are string enums
// (enums.go) and addresses netip values, so their JSON is the readable text
// it always was. Each type that crosses the wire has a Validate method
// (validate.go) holding the one rule per fact: plan checks the objects it
// would send, the agent every request, the nft renderer its spec.
package state
