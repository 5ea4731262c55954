// Package network gives containers an address of their own on a network shared
// by the nodes: it prepares a network namespace the way a CNI bridge plugin
// would (a namespace file bind-mounted under the agent's data directory, a veth
// pair with the host end on the node's bridge and the container end eth0 with
// the address and a MAC derived from it), announces the address with a
// gratuitous ARP after a move, and finds and removes the network lock rules
// CRIU leaves behind. It knows nothing of containers beyond their ids.
package network
