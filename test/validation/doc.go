// Package validation runs the OCI runtime-tools validation suite against runc
// and migrate's runtime (scripts/oci-validate.sh) and fails when migrate passes
// fewer validation programs than runc on the same host.
//
// It needs root and takes two to three minutes. It never skips on its own: set
// MIGRATE_SKIP_OCI_VALIDATION=1 to skip it deliberately. Set
// MIGRATE_KEEP_OCI_RESULTS=1 to keep the per-program logs of a passing run; a
// failing run always keeps them and names their directory.
package validation
