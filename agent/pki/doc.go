// Package pki creates the cluster's certificate authority and its node and admin
// certificates (ECDSA P-256), and builds the TLS 1.3 mutual-authentication
// configurations agents use between themselves.
//
// Identity: a certificate's common name is its holder's name, repeated as a DNS SAN;
// its organizational unit is its role, RoleNode for agents and RoleAdmin for
// migratectl reaching an agent over TCP.
package pki
