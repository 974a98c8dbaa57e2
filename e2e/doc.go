// Package e2e holds the end-to-end tests: a namespace lab with real sshd,
// the real migrate binary run from the admin namespace, real servers and
// clients, and checks made from outside as a user would.
//
// They need root. Everything runs in namespaces the tests create and
// remove; the root namespace is never touched.
package e2e
