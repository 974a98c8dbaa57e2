package state

import "fmt"

// Action is what a step does to one object.
type Action string

const (
	Create Action = "create"
	Update Action = "update"
	Delete Action = "delete"
)

// Symbol is the Terraform-style marker for the action.
func (a Action) Symbol() string {
	switch a {
	case Create:
		return "+"
	case Update:
		return "~"
	case Delete:
		return "-"
	}
	return "?"
}

// Step changes one object on one host. Before is the object as it was (nil
// for a create), After as it will be (nil for a delete). Because Before is
// kept, every step can be inverted exactly.
type Step struct {
	Host   string  `json:"host"` // "old" or "new"
	Action Action  `json:"action"`
	Before *Object `json:"before,omitempty"`
	After  *Object `json:"after,omitempty"`
}

// Object is the object the step is about (After, else Before).
func (s Step) Object() Object {
	if s.After != nil {
		return *s.After
	}
	if s.Before != nil {
		return *s.Before
	}
	return Object{}
}

// Key is the object's key.
func (s Step) Key() string { return s.Object().Key() }

// Inverse undoes the step.
func (s Step) Inverse() Step {
	inv := Step{Host: s.Host, Before: s.After, After: s.Before}
	switch s.Action {
	case Create:
		inv.Action = Delete
	case Delete:
		inv.Action = Create
	default:
		inv.Action = Update
	}
	return inv
}

// String describes the step for humans.
func (s Step) String() string {
	switch s.Action {
	case Update:
		return fmt.Sprintf("%s %s: %s -> %s", s.Action.Symbol(), s.Object().Kind(), s.Before, s.After)
	default:
		return fmt.Sprintf("%s %s %s", s.Action.Symbol(), s.Object().Kind(), s.Object())
	}
}
