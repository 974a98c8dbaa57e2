package views

import "fmt"

// Saved says where plan --out wrote the plan.
func (v *View) Saved(path string) {
	v.Info("Saved the plan to %s. Apply exactly it with: migrate apply %s", path, path)
}

// ApplyComplete ends a successful apply.
func (v *View) ApplyComplete(add, change, destroy int, statePath string) {
	v.Info("\nApply complete! Resources: %d added, %d changed, %d destroyed. State: %s", add, change, destroy, statePath)
}

// RollbackComplete ends a successful rollback.
func (v *View) RollbackComplete(undone int, statePath string) {
	v.Info("\nRollback complete! %d step(s) undone. State: %s", undone, statePath)
}

// Valid says the plan file is valid, and what is not checked yet.
func (v *View) Valid(file string, services, forwards int) {
	v.Info("%s is valid: %d service(s), %d forward(s). Checks against the live hosts (addresses, readiness) run in `migrate plan`.", file, services, forwards)
}

// Version names the build: the platform too, as terraform prints it, and
// the protocol its agent and client speak.
func (v *View) Version(version, goos, goarch string, agentProtocol int) {
	fmt.Fprintf(v.Out, "migrate %s %s/%s (agent protocol %d)\n", version, goos, goarch, agentProtocol)
}

// Wrote prints what init found, then the file it wrote.
func (v *View) Wrote(path string, summary []string) {
	for _, l := range summary {
		v.Info("%s", l)
	}
	v.Info("Wrote %s. Review it, then: migrate plan -f %s", path, path)
}
