// Package oci holds the runtime's integration tests: they drive the real
// `migrated oci` binary as root against the kernel's namespaces, cgroups and
// mounts, and check every feature from inside the container.
package oci
