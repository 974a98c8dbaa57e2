// Package plan turns a parsed plan file and the facts of both hosts into a
// Plan: per host, the ordered steps that bring the host to the desired state.
//
// Desired and Diff are pure functions: no SSH, no netlink, no clock. Kernel
// facts come in as arguments, so both are tested with tables and no host.
package plan
