// Package metrics holds the agent's Prometheus metrics: a Recorder the agent
// calls when a move, checkpoint, restore or snapshot ends, gauges for the agent
// and its containers, and the /metrics HTTP handler.
//
// Label values are bounded here, not by callers: modes, phases, reasons and
// container statuses outside their documented sets are recorded as "other", so
// a caller passing an error string cannot grow the number of series.
// docs/metrics.md lists every metric with its labels.
package metrics
