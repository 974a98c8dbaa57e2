// Package apply executes a plan against hosts and rolls back from the
// journal. Every step is written to the journal, and the journal saved to
// disk, before the next step starts; a failure returns the partial record
// together with its error.
package apply
