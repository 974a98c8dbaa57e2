// Package ops holds migrate's operations apart from the command line:
// what init, plan, apply, rollback, force-unlock and status do with the
// hosts, given a way to reach them. cmd/migrate keeps flags, prompts and
// views. The pure parts (grouping listeners into services, resolving
// which hosts to reach) are plain functions tested with tables.
package ops
