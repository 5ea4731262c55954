// Package e2e holds end-to-end tests of the agent: they build the real migrated and
// migratectl binaries, start agents with their own data directories and sockets, and
// drive them only through migratectl, as an operator would. They need root.
package e2e
