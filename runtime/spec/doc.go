// Package spec loads, validates and generates OCI runtime configurations
// (config.json) for the runtime. It knows nothing about processes or the kernel:
// everything here is pure and testable without root.
package spec
