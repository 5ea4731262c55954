// Package peercred serves gRPC on a unix socket that only root may use: the socket is
// a path (never abstract, CVE-2020-15257) created with mode 0600, and every connection's
// peer credentials (SO_PEERCRED) are checked, so that a file-mode mistake or an fd
// passed into a container does not open the API to other users.
package peercred
